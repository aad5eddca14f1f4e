"""CLIENT_KEYS_FILE: the contract is accepted as the issue writes it, and every mistake is a clear error
naming the entry, never the key."""

from __future__ import annotations

import datetime as dt
import hashlib

import orjson
import pytest

from chatbridge.core.secrets import redact
from chatbridge.features.clientkeys import KeysFileError, parse_keys

SECRET = "sk-team-a-secret-value-0123"

CONTRACT = f"""
keys:
  - key: {SECRET}          # or key_sha256: <hex digest of the key>
    name: team-a
    models: ["kimi*", "claude-*"]   # optional globs; default all
    requests_per_minute: 60         # optional
    tokens_per_day: 200000          # optional (input + output)
    max_concurrent_streams: 4       # optional
    expires_at: 2027-01-01T00:00:00Z  # optional
  - key_sha256: {hashlib.sha256(b"sk-team-b-other-key-99").hexdigest().upper()}
    name: team-b
""".encode()


def _error(raw: str | bytes) -> str:
    with pytest.raises(KeysFileError) as caught:
        parse_keys(raw.encode() if isinstance(raw, str) else raw)
    message = str(caught.value)
    assert SECRET not in message and "0123" not in message.replace("keys[0]", "")
    return message


def test_the_issues_contract_parses_with_every_field() -> None:
    a, b = parse_keys(CONTRACT)
    assert a.name == "team-a" and a.digest == hashlib.sha256(SECRET.encode()).hexdigest()
    assert a.limits.models == ("kimi*", "claude-*")
    assert (a.limits.requests_per_minute, a.limits.tokens_per_day, a.limits.max_concurrent_streams) == (60, 200000, 4)
    assert a.limits.expires_at == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert a.allows("kimi-k2") and a.allows("claude-sonnet-4-5") and not a.allows("gpt-4o")
    assert SECRET not in a.hint and a.source == "file"
    assert b.digest == hashlib.sha256(b"sk-team-b-other-key-99").hexdigest()  # upper-case hex accepted
    assert b.limits.models is None and b.allows("anything") and not b.limits.limited
    assert redact(f"echo {SECRET}") != f"echo {SECRET}"  # the file's keys are registered as secrets


def test_json_of_the_same_shape_is_read_too() -> None:
    (key,) = parse_keys(b'{"keys": [{"key": "sk-json-key-0123456789", "name": "j", "expires_at": "2027-01-01"}]}')
    assert key.name == "j" and key.limits.expires_at == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_a_time_without_zone_is_utc_and_expiry_is_checked() -> None:
    (key,) = parse_keys(b"keys: [{key: sk-past-key-0123456, name: old, expires_at: '2020-05-01T10:00:00'}]")
    assert key.limits.expires_at == dt.datetime(2020, 5, 1, 10, tzinfo=dt.UTC) and key.expired()


@pytest.mark.parametrize(("body", "expected"), [
    (f"keys: [{{key: {SECRET}, name: a, colour: red}}]", "keys[0] (name 'a'): colour: unknown field"),
    (f"keys: [{{key: {SECRET}, name: a}}, {{key: {SECRET}x, name: a}}]", "keys[1] repeats the name 'a' of keys[0]"),
    (f"keys: [{{key: {SECRET}, name: a}}, {{key: {SECRET}, name: b}}]", "keys[1] (name 'b') has the same key as keys[0] (name 'a')"),
    (f"keys: [{{key: {SECRET}, name: a}}, {{key_sha256: {hashlib.sha256(SECRET.encode()).hexdigest()}, name: b}}]",
     "keys[1] (name 'b') has the same key as keys[0]"),
    (f"keys: [{{key: {SECRET}, name: a, models: ['kimi[']}}]", "keys[0] (name 'a'): models: model glob 'kimi[' has a [ without its closing ]"),
    (f"keys: [{{key: {SECRET}, name: a, models: []}}]", "keys[0] (name 'a'): models: models must be a non-empty list"),
    (f"keys: [{{key: {SECRET}, name: a, models: 'kimi*'}}]", "models must be a non-empty list"),
    (f"keys: [{{key: {SECRET}, name: a, expires_at: next-tuesday}}]", "keys[0] (name 'a'): expires_at: expires_at must be an ISO 8601"),
    (f"keys: [{{key: {SECRET}, name: a, expires_at: 2027-13-45}}]", "keys[0] (name 'a'): expires_at:"),
    (f"keys: [{{key: {SECRET}, name: a, requests_per_minute: 0}}]", "keys[0] (name 'a'): requests_per_minute:"),
    (f"keys: [{{key: {SECRET}, name: a, requests_per_minute: '60'}}]", "keys[0] (name 'a'): requests_per_minute:"),
    (f"keys: [{{key: {SECRET}, name: a, tokens_per_day: true}}]", "keys[0] (name 'a'): tokens_per_day:"),
    (f"keys: [{{key: {SECRET}, key_sha256: '{'0' * 64}', name: a}}]", "keys[0] (name 'a'): give exactly one of key and key_sha256"),
    (f"keys: [{{key_sha256: {'1' * 64}, name: a}}]", "keys[0] (name 'a'): key_sha256: must be text (in YAML, put it in quotes)"),
    ("keys: [{key: 123456789012, name: a}]", "keys[0] (name 'a'): key: must be text"),
    ("keys: [{name: a}]", "keys[0] (name 'a'): give exactly one of key and key_sha256"),
    ("keys: [{key_sha256: abc, name: a}]", "keys[0] (name 'a'): key_sha256: key_sha256 must be the 64 hex digits"),
    ("keys: [{key: short, name: a}]", "keys[0] (name 'a'): key:"),
    (f"keys: [{{key: {SECRET}}}]", "keys[0]: name:"),
    (f"keys: [{{key: {SECRET}, name: ' a'}}]", "name must be 1 to 64 printable characters"),
    (f"keys: [{{key: {SECRET}, name: 'a/b'}}]", "name must be 1 to 64 printable characters other than /"),
    (f"keys: [{{key: {SECRET}, name: a}}]\nextra: 1", "extra: unknown field"),
    ("keys: [ {key: oops", "is not valid YAML at line"),
    ('{"keys": [', "is not valid JSON at line"),
    ("- just\n- a list", "the file must be a mapping with a `keys:` list"),
    ("", "the file must be a mapping with a `keys:` list"),
])
def test_every_mistake_is_named_by_its_entry_never_by_its_key(body: str, expected: str) -> None:
    message = _error(body)
    assert expected in message, message
    assert message.startswith("CLIENT_KEYS_FILE is not valid")


def test_an_empty_key_list_is_valid() -> None:
    assert parse_keys(b"keys: []") == []


@pytest.mark.parametrize("name", ["team\u200ba", "team\u00a0a", "a\u2028b", "a\x85b", "a\u202eb", ".", ".."])
def test_a_name_that_looks_like_another_breaks_a_log_line_or_is_no_path_segment_is_refused(name: str) -> None:
    """Invisible, line-breaking or bidi characters make a name look like another (or split a log line);
    `.` and `..` are removed from /admin/keys/{name} by HTTP clients, so such a key could not be revoked."""
    raw = orjson.dumps({"keys": [{"key": SECRET, "name": name}]})
    assert "keys[0]" in _error(raw) and "name" in _error(raw)


def test_names_with_spaces_dots_and_other_scripts_are_kept() -> None:
    names = ["team a", "ci.nightly", "équipe-β", "a..b", "100%", "...", "#1?"]
    raw = orjson.dumps({"keys": [{"key": f"{SECRET}-{i}", "name": n} for i, n in enumerate(names)]})
    assert [k.name for k in parse_keys(raw)] == names


def test_a_key_an_http_client_cannot_send_is_refused() -> None:
    """The key travels in a header: httpx (so the OpenAI and Anthropic SDKs) only sends ASCII there."""
    message = _error(orjson.dumps({"keys": [{"key": "sk-équipe-0123456789abcdef", "name": "a"}]}))
    assert "keys[0] (name 'a'): key:" in message and "ASCII" in message


def test_globs_allow_a_model_in_any_case_and_nothing_more() -> None:
    (key,) = parse_keys(f"keys: [{{key: {SECRET}, name: a, models: ['MBZUAI-IFM/*', 'kimi-k2']}}]".encode())
    assert key.allows("mbzuai-ifm/k2-think-v2") and key.allows("MBZUAI-IFM/K2-Think-v2") and key.allows("KIMI-K2")
    assert not key.allows("kimi-k2.5") and not key.allows("mbzuai-ifm")
