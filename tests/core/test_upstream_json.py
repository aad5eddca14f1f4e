"""`upstream_json.loads`: orjson's reading, plus documents whose strings hold lone surrogates."""

from __future__ import annotations

import json

import orjson
import pytest

from chatbridge.core.upstream_json import loads


def test_a_well_formed_document_reads_as_orjson_reads_it() -> None:
    doc = b'{"a": [1, 2.5, null, true], "b": "\\ud83d\\ude00 caf\\u00e9"}'
    assert loads(doc) == orjson.loads(doc) == {"a": [1, 2.5, None, True], "b": "\U0001f600 café"}


def test_lone_halves_become_replacement_characters_in_values_and_keys_at_any_depth() -> None:
    doc = json.dumps({"x\ud800": [{"c": "a\ud83d"}, "\ude00b"], "pair": "\ud83d\ude00"}).encode()
    assert loads(doc) == {"x\ufffd": [{"c": "a\ufffd"}, "\ufffdb"], "pair": "\U0001f600"}
    assert loads(doc.decode()) == loads(doc)  # str in, the same


@pytest.mark.parametrize("doc", [b"{bad", b'{"a": "\\ud800"', b'["\\ud800", NaN]', b'["\\ud800", Infinity]',
                                 b"[" * 100_000 + b'"\\ud800"' + b"]" * 100_000, b'"\\ud800\xff"'])
def test_what_is_not_json_stays_an_orjson_decode_error(doc: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        loads(doc)
