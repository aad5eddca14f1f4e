"""Tool lists a client cannot use: duplicate names and schemas that are not object schemas."""

from __future__ import annotations

import time
from typing import Any

import pytest

from chatbridge.core.types import ToolSpec
from chatbridge.features.tools import CallValidator, ParsedCall
from chatbridge.features.tools.schemas import ToolProblem, schema_problem, tool_problem
from tests.features.tools.helpers import TOOLS

# What agent frameworks really send: pydantic-generated strict schemas with titles, $defs/$ref,
# Optional as anyOf, handoff tools with an empty object schema, a draft-07 MCP schema.
AGENT_SCHEMAS: list[dict[str, Any]] = [
    {},
    {"type": "object", "properties": {}, "required": [], "additionalProperties": False},
    {
        "type": "object",
        "title": "lookup_args",
        "properties": {
            "city": {"title": "City", "type": "string"},
            "when": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}], "default": None},
            "place": {"$ref": "#/$defs/Place"},
        },
        "required": ["city", "when", "place"],
        "additionalProperties": False,
        "$defs": {"Place": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]}},
    },
    {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {"p": {"type": "string"}}},
    {"$schema": "https://example.com/unknown-meta", "type": "object"},
    {"properties": {"q": {"type": "string"}}},  # no top-level type: still an object schema
]


@pytest.mark.parametrize("schema", AGENT_SCHEMAS)
def test_schemas_agents_send_are_accepted(schema: dict[str, Any]) -> None:
    assert schema_problem(schema) is None


@pytest.mark.parametrize(
    "schema,expected",
    [
        ({"type": "string"}, "must have type 'object', not \"string\""),
        ({"type": ["object", "null"]}, "must have type 'object'"),
        ({"type": "object", "properties": []}, "at 'parameters.properties': [] is not of type 'object'"),
        ({"type": "object", "properties": {"a": {"type": "strin"}}}, "at 'parameters.properties.a.type'"),
        ({"type": "object", "required": "a"}, "at 'parameters.required': 'a' is not of type 'array'"),
        ({"type": "object", "properties": {"n": {"type": "integer", "minimum": "1"}}}, "parameters.properties.n.minimum"),
        ({"type": "object", "properties": {"n": {"type": "integer", "maximum": 10**30}}}, "integers must fit in 64 bits"),
    ],
)
def test_broken_schemas_are_explained(schema: dict[str, Any], expected: str) -> None:
    problem = schema_problem(schema)
    assert problem is not None and expected in problem


def test_tool_problem_names_the_tool_and_the_field() -> None:
    assert tool_problem(list(TOOLS)) is None
    duplicate = tool_problem([*TOOLS, ToolSpec("search")])
    assert duplicate == ToolProblem(
        len(TOOLS), "name",
        f"the function name 'search' is used by tools[1] and tools[{len(TOOLS)}]; function names must be unique",
    )
    broken = tool_problem([ToolSpec("ok"), ToolSpec("bad", parameters={"type": "object", "properties": 3})])
    assert broken is not None and (broken.index, broken.field) == (1, "parameters")
    assert broken.message.startswith("invalid schema for function 'bad': at 'parameters.properties'")


def test_verdicts_are_cached_so_resent_tools_cost_nothing() -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string", "enum": ["a", "b"]} for i in range(40)}}
    started = time.perf_counter()
    assert schema_problem(schema) is None
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(50):
        assert schema_problem(dict(reversed(list(schema.items())))) is None  # same schema, other key order
    assert (time.perf_counter() - started) / 50 < first


def test_the_validator_still_validates_agent_schemas() -> None:
    tool = ToolSpec("lookup", parameters=AGENT_SCHEMAS[2])
    validator = CallValidator([tool])
    good = '{"city": "Paris", "when": null, "place": {"lat": 48.8}}'
    assert validator.error(ParsedCall("lookup", good)) is None
    missing = validator.error(ParsedCall("lookup", '{"city": "Paris", "when": null, "place": {}}'))
    assert missing is not None and "arguments.place: 'lat' is a required property" in missing
    extra = validator.error(ParsedCall("lookup", '{"city": "P", "when": null, "place": {"lat": 1}, "x": 1}'))
    assert extra is not None and "Additional properties are not allowed" in extra


def test_the_verdict_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import chatbridge.features.tools.schemas as schemas

    monkeypatch.setattr(schemas, "_CACHE_SIZE", 3)
    monkeypatch.setattr(schemas, "_verdicts", {})
    for i in range(10):
        assert schema_problem({"type": "object", "properties": {f"p{i}": {"type": "string"}}}) is None
        assert len(schemas._verdicts) <= 3
    assert schema_problem({"type": "object", "properties": {"p0": {"type": "strin"}}}) is not None  # still checked
