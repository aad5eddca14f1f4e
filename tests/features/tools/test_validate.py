"""Argument validation: what makes a call invalid, in words the model can act on."""

from __future__ import annotations

from chatbridge.core.types import ToolSpec
from chatbridge.features.tools import CallValidator, ParsedCall
from tests.features.tools.helpers import TOOLS


def test_a_valid_call_passes() -> None:
    assert CallValidator(TOOLS).error(ParsedCall("get_weather", '{"city": "Paris", "unit": "f"}')) is None


def test_schema_errors_name_the_path() -> None:
    validator = CallValidator(TOOLS)
    missing = validator.error(ParsedCall("get_weather", '{"unit": "c"}'))
    assert missing is not None and "'city' is a required property" in missing
    bad_enum = validator.error(ParsedCall("get_weather", '{"city": "Paris", "unit": "kelvin"}'))
    assert bad_enum is not None and bad_enum.startswith("arguments.unit:")
    nested = validator.error(ParsedCall("create_event", '{"title": "x", "attendees": [{"name": "a"}]}'))
    assert nested is not None and "arguments.attendees[0]" in nested
    wrong_type = validator.error(ParsedCall("search", '{"query": "x", "limit": "5"}'))
    assert wrong_type is not None and "is not of type 'integer'" in wrong_type


def test_unknown_and_unforced_tools_are_invalid() -> None:
    unknown = CallValidator(TOOLS).error(ParsedCall("fly", "{}"))
    assert unknown is not None and "no tool named 'fly'" in unknown and "get_weather" in unknown
    forced = CallValidator(TOOLS, forced="search").error(ParsedCall("get_time", "{}"))
    assert forced is not None and "must call the tool 'search'" in forced


def test_argument_errors_from_parsing_are_reported() -> None:
    validator = CallValidator(TOOLS)
    assert validator.error(ParsedCall("get_time", "nope", error="bad JSON")) == "bad JSON"
    assert validator.error(ParsedCall("get_time", "[1]")) == "the arguments must be a JSON object"
    not_json = validator.error(ParsedCall("get_time", "{"))
    assert not_json is not None and "not valid JSON" in not_json


def test_broken_or_empty_schemas_do_not_block_calls() -> None:
    tools = [ToolSpec("broken", parameters={"type": "no-such-type"}), ToolSpec("free")]
    validator = CallValidator(tools)
    assert validator.error(ParsedCall("broken", '{"anything": 1}')) is None
    assert validator.error(ParsedCall("free", '{"x": [1]}')) is None


def test_many_errors_are_capped() -> None:
    tool = ToolSpec(
        "many",
        parameters={"type": "object", "properties": {k: {"type": "integer"} for k in "abcde"}},
    )
    error = CallValidator([tool]).error(ParsedCall("many", '{"a": "1", "b": "1", "c": "1", "d": "1", "e": "1"}'))
    assert error is not None and error.endswith("(and 2 more)")
