"""The redacting log filter: the last line of defence if a secret reaches a message."""

from __future__ import annotations

import logging

import orjson

from chatbridge.core.logs import JsonFormatter, RedactingFilter

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6ImFiYyIsImV4cCI6OTk5OTk5OTk5OX0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("chatbridge", logging.WARNING, __file__, 1, msg, args, None)


def test_filter_masks_tokens_in_messages_and_arguments() -> None:
    record = _record("upstream said %s for Bearer %s", f"bad token {TOKEN}", "sk-live-abcdefghijklmnop")
    assert RedactingFilter().filter(record)
    text = record.getMessage()
    assert TOKEN not in text and "sk-live-abcdefghijklmnop" not in text and TOKEN[:6] in text


def test_json_lines_are_json_and_redacted() -> None:
    record = _record("token=%s", TOKEN)
    RedactingFilter().filter(record)
    line = orjson.loads(JsonFormatter().format(record))
    assert line["level"] == "WARNING" and TOKEN not in line["message"]
