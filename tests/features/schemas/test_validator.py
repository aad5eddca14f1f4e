"""Validation against a client's schema finishes, whatever the schema and the arguments."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import chatbridge.features.schemas.validator as bounded
from chatbridge.core.types import ToolSpec
from chatbridge.features.schemas import MAX_ARGUMENT_DEPTH, ValidationIncomplete, errors_of, loads, validator_for
from chatbridge.features.tools import CallValidator, ParsedCall
from chatbridge.features.tools.envelope import BlockSyntaxError, decode_block


def error(schema: dict[str, Any], arguments: Any) -> str | None:
    return CallValidator([ToolSpec("t", parameters=schema)]).error(ParsedCall("t", json.dumps(arguments)))


def test_catastrophic_patterns_run_in_linear_time() -> None:
    # Python's re needs about 2**n steps here: 2.4 s at n=25, centuries at n=60.
    hostile = "a" * 60 + "!"
    started = time.monotonic()
    problem = error({"type": "object", "properties": {"p": {"type": "string", "pattern": "^(a+)+$"}}}, {"p": hostile})
    keys = error({"type": "object", "patternProperties": {"^(a+)+$": {"type": "integer"}}}, {hostile[:-1]: "x"})
    extra = error({"type": "object", "patternProperties": {"^(a|aa)+$": {}}, "additionalProperties": False}, {hostile: 1})
    assert time.monotonic() - started < 10  # generous: it takes milliseconds
    assert problem is not None and "does not match '^(a+)+$'" in problem
    assert keys is not None and "is not of type 'integer'" in keys
    assert extra is not None and "does not match any of the regexes" in extra


def test_patterns_keep_their_meaning() -> None:
    schema = {"type": "object", "properties": {"p": {"type": "string", "pattern": r"\d{3}"}},
              "patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": False}
    assert error(schema, {"p": "ab123cd", "x-trace": "1"}) is None  # `pattern` searches, it is not anchored
    assert error(schema, {"p": "12"}) is not None
    assert error(schema, {"other": 1}) is not None
    assert error({"type": "object", "properties": {"p": {"pattern": r"^\p{L}+$"}}}, {"p": "Zürich"}) is None


def test_exponential_reference_fan_out_stops_at_the_budget(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    defs: dict[str, Any] = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(40)}
    defs["d40"] = {"type": "string"}
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/d0"}}, "$defs": defs}
    monkeypatch.setattr(bounded, "STEP_BUDGET", 5_000)  # 2**40 steps otherwise
    with pytest.raises(ValidationIncomplete, match="more than 5000 steps"):
        errors_of(validator_for(schema), {"a": 1})
    with caplog.at_level("WARNING", logger="chatbridge.tools"):
        assert error(schema, {"a": 1}) is None  # let through unvalidated, and said so
    assert "were not validated" in caplog.text
    assert error(schema, {"a": "fine"}) is None


def test_unique_items_is_linear_and_uses_json_equality() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}
    assert error(schema, {"a": [1, True, "1", None, {"k": 1}, [1]]}) is None  # true is not 1
    assert error(schema, {"a": [1, 1.0]}) is not None
    assert error(schema, {"a": [{"x": 1, "y": [2]}, {"y": [2.0], "x": 1}]}) is not None
    many = [{"k": i, "v": [i, str(i)]} for i in range(30_000)]
    started = time.monotonic()
    assert error(schema, {"a": many}) is None  # quadratic: about 450 million comparisons
    assert error(schema, {"a": [*many, {"k": 5, "v": [5, "5"]}]}) is not None
    assert time.monotonic() - started < 20


def test_deep_arguments_are_an_error_for_the_model_not_a_crash() -> None:
    for depth in (MAX_ARGUMENT_DEPTH + 1, 1_000, 100_000):
        text = '{"a": ' + "[" * depth + "]" * depth + "}"
        problem = CallValidator([ToolSpec("t")]).error(ParsedCall("t", text))
        assert problem is not None and f"nests deeper than {MAX_ARGUMENT_DEPTH} levels" in problem
        with pytest.raises(BlockSyntaxError, match="nests deeper"):
            decode_block('{"name": "t", "arguments": ' + text + "}")
        (call,) = decode_block(json.dumps({"name": "t", "arguments": text}))  # arguments as a JSON string
        assert call.error is not None and "nests deeper" in call.error
    fine = '{"a": ' + "[" * (MAX_ARGUMENT_DEPTH - 1) + "]" * (MAX_ARGUMENT_DEPTH - 1) + "}"
    assert CallValidator([ToolSpec("t")]).error(ParsedCall("t", fine)) is None


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"code": "[" * 10_000 + "{" * 10_000, "quote": 'a "[[[" b \\'})
    assert loads(text)["code"].startswith("[[[")


def test_long_failing_values_are_cut_in_messages() -> None:
    problem = error({"type": "object", "properties": {"p": {"type": "integer"}}}, {"p": "x" * 50_000})
    assert problem is not None and len(problem) < 400 and problem.endswith("…")


def test_ecma_unicode_escapes_mean_what_they_mean_in_json_schema() -> None:
    chinese = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^[\\u4e00-\\u9fa5]+$"}}}
    assert error(chinese, {"name": "中文"}) is None
    assert error(chinese, {"name": "abc"}) is not None
    emoji = {"type": "object", "properties": {"e": {"type": "string", "pattern": "^\\u{1F600}$"}}}
    assert error(emoji, {"e": "😀"}) is None
    literal = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^\\\\u0041$"}}}  # an escaped backslash
    assert error(literal, {"s": "\\u0041"}) is None and error(literal, {"s": "A"}) is not None
