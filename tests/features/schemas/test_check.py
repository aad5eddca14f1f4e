"""Schemas are attacker input: what `schema_problem` refuses, and that it never raises or fetches."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from chatbridge.core.types import ToolSpec
from chatbridge.features.schemas import MAX_SCHEMA_DEPTH, MAX_SCHEMA_VALUES, MAX_TOTAL_SCHEMA_VALUES
from chatbridge.features.tools.schemas import ToolProblem, schema_problem, tool_problem


def nested(keyword: str, depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    current = schema
    for _ in range(depth):
        current[keyword] = {}
        current = current[keyword]
    return schema


@pytest.fixture
def listener() -> Iterator[tuple[str, list[socket.socket]]]:
    """A loopback port that accepts connections and never answers (a tarpit): nothing may connect."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/schema.json", accepted
    server.close()
    for conn in accepted:
        conn.close()


def test_a_reference_to_a_url_is_refused_without_fetching_it(listener: tuple[str, list[socket.socket]]) -> None:
    url, accepted = listener
    for ref in (url, url + "#/definitions/x", "other.json", "urn:example:thing"):
        problem = schema_problem({"type": "object", "properties": {"a": {"$ref": ref}}})
        assert problem is not None and f"$ref {ref!r} points outside the schema" in problem
    assert accepted == []


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
        {"type": "object", "properties": {"a": {"$ref": "#/properties/b"}}},
        {"type": "object", "properties": {"a": {"$ref": "#nowhere"}}},
        {"type": "object", "properties": {"a": {"$dynamicRef": "#meta"}}},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {"a": {"$ref": "#/definitions/x"}}},
    ],
)
def test_a_reference_to_nowhere_is_refused(schema: dict[str, Any]) -> None:
    problem = schema_problem(schema)
    assert problem is not None and "does not resolve to anything in the schema" in problem


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"type": "string"}}},
        {"$id": "https://example.com/root", "type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {}}},
        {"type": "object", "properties": {"a": {"$ref": "#x"}}, "$defs": {"x": {"$anchor": "x", "type": "string"}}},
        {"type": "object", "properties": {"child": {"$ref": "#"}}},  # a tree: recursion that descends
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
         "properties": {"a": {"$ref": "#/definitions/x"}}, "definitions": {"x": {"type": "string"}}},
    ],
)
def test_local_references_are_accepted(schema: dict[str, Any]) -> None:
    assert schema_problem(schema) is None


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}},
        {"type": "object", "$ref": "#/$defs/a", "$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"not": {"$ref": "#/$defs/a"}}}},
        {"type": "object", "anyOf": [{"$ref": "#"}]},
    ],
)
def test_a_reference_loop_that_never_descends_is_refused(schema: dict[str, Any]) -> None:
    problem = schema_problem(schema)
    assert problem is not None and "loop back on themselves" in problem


@pytest.mark.parametrize("keyword", ["not", "items", "additionalProperties"])
def test_deep_schemas_are_refused_not_a_recursion_error(keyword: str) -> None:
    for depth in (120, 150, 190, 250, 1000):  # 250 and up also defeat orjson's own limit
        problem = schema_problem(nested(keyword, depth))
        assert problem is not None and f"nests deeper than {MAX_SCHEMA_DEPTH} levels" in problem
    assert schema_problem(nested(keyword, MAX_SCHEMA_DEPTH - 2)) is None


def test_huge_schemas_are_refused() -> None:
    big = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(MAX_SCHEMA_VALUES // 2)}}
    problem = schema_problem(big)
    assert problem is not None and f"more than {MAX_SCHEMA_VALUES} values" in problem


def test_many_schemas_together_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import chatbridge.features.tools.schemas as schemas

    assert MAX_TOTAL_SCHEMA_VALUES < 4 * MAX_SCHEMA_VALUES  # four tools at the single-schema limit are too many
    monkeypatch.setattr(schemas, "MAX_TOTAL_SCHEMA_VALUES", 100)  # the same rule, cheaper to show
    each = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(10)}}  # 22 values
    tools = [ToolSpec(f"t{i}", parameters=dict(each, title=f"t{i}")) for i in range(6)]
    problem = tool_problem(tools)
    assert problem is not None and (problem.index, problem.field) == (4, "parameters")
    assert "the schemas of tools[0] to tools[4] hold more than 100 values together" in problem.message
    assert tool_problem(tools[:4]) is None


@pytest.mark.parametrize(
    "schema,pattern",
    [
        ({"type": "object", "properties": {"p": {"type": "string", "pattern": "^(?=.*[A-Z]).+$"}}}, "^(?=.*[A-Z]).+$"),
        ({"type": "object", "properties": {"p": {"type": "string", "pattern": r"(a)\1"}}}, r"(a)\1"),
        ({"type": "object", "patternProperties": {"(?<=x)y": {}}}, "(?<=x)y"),
        # draft-04's metaschema does not check patternProperties keys: the walk does
        ({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object", "patternProperties": {"(?!a)": {}}}, "(?!a)"),
        ({"type": "object", "properties": {"p": {"propertyNames": {"pattern": "a{1001}"}}}}, "a{1001}"),
    ],
)
def test_patterns_re2_cannot_run_are_refused(schema: dict[str, Any], pattern: str) -> None:
    problem = schema_problem(schema)
    assert problem is not None and f"the pattern {pattern!r} is not supported" in problem and "RE2" in problem


def test_patterns_re2_runs_are_accepted_even_where_python_re_refuses_them() -> None:
    assert schema_problem({"type": "object", "properties": {"p": {"type": "string", "pattern": "^(a+)+$"}}}) is None
    assert schema_problem({"type": "object", "properties": {"p": {"type": "string", "pattern": r"^\p{L}+$"}}}) is None


def test_unevaluated_properties_with_pattern_properties_is_refused() -> None:
    schema = {"type": "object", "patternProperties": {"^x-": {}}, "allOf": [{"unevaluatedProperties": False}]}
    problem = schema_problem(schema)
    assert problem is not None and "'unevaluatedProperties' cannot be used" in problem
    assert schema_problem({"type": "object", "properties": {"a": {}}, "unevaluatedProperties": False}) is None


def test_problems_name_the_tool_and_the_root_the_dialect_chose() -> None:
    tools = [ToolSpec("fine"), ToolSpec("fetcher", parameters={"type": "object", "$ref": "https://example.com/s.json"})]
    problem = tool_problem(tools)
    assert problem is not None and (problem.index, problem.field) == (1, "parameters")
    assert problem.message.startswith("invalid schema for function 'fetcher': at 'parameters': $ref")
    anthropic = tool_problem(tools, root="input_schema")
    assert anthropic == ToolProblem(1, "parameters", problem.message.replace("'parameters'", "'input_schema'"))
