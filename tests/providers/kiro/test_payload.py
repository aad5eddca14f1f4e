"""Request bodies: tools and schemas Kiro takes, effort where the model takes it, and the emulator's rules kept."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from chatbridge.core.types import Message, ToolCall, ToolSpec
from chatbridge.providers.kiro.conversation import normalise
from chatbridge.providers.kiro.models import aliases, default_efforts, dotted, effort_for, parse_catalog, static_models
from chatbridge.providers.kiro.payload import HIDDEN_PROMPT_TOKENS, BodyOptions, build_body, estimate_input_tokens
from chatbridge.providers.kiro.tools import ToolNames, sanitize_schema, tool_description, upstream_name
from tests.upstreams.kiro import DEFAULT_ARN, MODELS
from tests.upstreams.kiro_rules import check_body

WEATHER = ToolSpec("get_weather", "Weather for a city",
                   {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


def body_for(messages: list[Message], tools: tuple[ToolSpec, ...] = (WEATHER,), **options: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"model_id": "claude-sonnet-4.5", "profile_arn": DEFAULT_ARN, "tools": tools, **options}
    return build_body(normalise(messages), BodyOptions(**settings), ToolNames())


def test_a_messy_history_goes_out_in_a_shape_kiro_takes() -> None:
    messages = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Weather?"), Message(role="user", content="In Paris and Rome."),
        Message(role="assistant", content=None, tool_calls=[ToolCall("t1", "get_weather", '{"city":"Paris"}'),
                                                           ToolCall("t2", "get_weather", '{"city":"Rome"}')]),
        Message(role="tool", content="rain", tool_call_id="t2"), Message(role="tool", content="sun", tool_call_id="t1"),
        Message(role="assistant", content="Paris: sun, Rome: rain."), Message(role="assistant", content="Anything else?"),
    ]
    body = body_for(messages)
    assert check_body(body, set(MODELS), set()) is None
    state = body["conversationState"]
    assert body["profileArn"] == DEFAULT_ARN
    assert [next(iter(m)) for m in state["history"]] == ["userInputMessage", "assistantResponseMessage"] * 2
    assert state["currentMessage"]["userInputMessage"]["content"] == "Continue"
    results = state["history"][2]["userInputMessage"]["userInputMessageContext"]["toolResults"]
    assert [r["toolUseId"] for r in results] == ["t1", "t2"]
    assert all(m["userInputMessage"]["modelId"] == "claude-sonnet-4.5" for m in [*state["history"][::2], state["currentMessage"]])
    assert "tools" not in state["history"][0]["userInputMessage"].get("userInputMessageContext", {})


def test_tools_of_the_history_that_are_not_offered_get_stand_ins() -> None:
    messages = [Message(role="user", content="hi"),
                Message(role="assistant", content="", tool_calls=[ToolCall("t1", "old.tool", "{}")]),
                Message(role="tool", content="ok", tool_call_id="t1"), Message(role="user", content="thanks")]
    body = body_for(messages, tools=())
    assert check_body(body, set(MODELS), set()) is None
    [spec] = body["conversationState"]["currentMessage"]["userInputMessage"]["userInputMessageContext"]["tools"]
    assert spec["toolSpecification"]["name"] == upstream_name("old.tool") == body["conversationState"]["history"][1][
        "assistantResponseMessage"]["toolUses"][0]["name"]


def test_tool_choice_none_offers_no_tools() -> None:
    body = body_for([Message(role="user", content="hi")], offer_tools=False)
    assert "userInputMessageContext" not in body["conversationState"]["currentMessage"]["userInputMessage"]
    assert "history" not in body["conversationState"]


def test_effort_is_sent_only_when_given() -> None:
    assert "additionalModelRequestFields" not in body_for([Message(role="user", content="hi")])
    body = body_for([Message(role="user", content="hi")], model_id="claude-opus-4.6", effort="high")
    assert body["additionalModelRequestFields"] == {"output_config": {"effort": "high"}}


@pytest.mark.parametrize(("model", "requested", "sent"), [
    ("claude-sonnet-4.5", "high", None),  # 4.5 refuses additionalModelRequestFields
    ("claude-haiku-4.5", "low", None),
    ("claude-sonnet-4.6", "high", "high"),
    ("claude-sonnet-4.6", "minimal", "low"),
    ("claude-sonnet-4.6", "xhigh", "high"),  # no xhigh for sonnet: the nearest below
    ("claude-opus-4.6", "xhigh", "xhigh"),
    ("claude-opus-4.6", "none", None),
    ("claude-opus-4.6", "banana", None),
    ("auto", "high", None),
    ("deepseek-3.2", "high", None),
])
def test_effort_where_the_model_takes_it(model: str, requested: str, sent: str | None) -> None:
    assert effort_for(requested, default_efforts(model)) == sent


def test_the_catalog_schema_decides_the_effort_values() -> None:
    answer = {"models": [
        {"modelId": "claude-opus-4.7", "tokenLimits": {"maxInputTokens": 1_000_000},
         "additionalModelRequestFieldsSchema": {"properties": {"output_config": {"properties": {"effort": {"enum": ["low", "max"]}}}}}},
        {"modelId": "claude-sonnet-5", "additionalModelRequestFieldsSchema": '{"properties": {}}'},
        {"modelId": "glm-5"}, "qwen3-coder-next", {"name": "no id"},
    ]}
    models = {m.id: m for m in parse_catalog(answer)}
    assert models["claude-opus-4.7"].efforts == ("low", "max") and models["claude-opus-4.7"].window == 1_000_000
    assert models["claude-sonnet-5"].efforts == () and models["glm-5"].efforts == ()
    assert set(models) == {"claude-opus-4.7", "claude-sonnet-5", "glm-5", "qwen3-coder-next"}
    assert effort_for("high", models["claude-opus-4.7"].efforts) == "low"


def test_dashed_dotted_and_dated_spellings() -> None:
    assert set(aliases("claude-sonnet-4.5")) >= {"claude-sonnet-4-5", "claude-sonnet-4-5-20250929",
                                                  "claude-sonnet-4.5-20250929", "claude-sonnet-4-5-latest"}
    assert "claude-sonnet-4-20250514" in aliases("claude-sonnet-4")
    assert aliases("auto") == []
    assert set(aliases("claude-3.7-sonnet")) >= {"claude-3-7-sonnet-20250219", "claude-3-7-sonnet-latest"}
    assert set(aliases("claude-opus-4.9")) == {"claude-opus-4-9", "claude-opus-4-9-latest", "claude-opus-4.9-latest"}


@pytest.mark.parametrize(("name", "upstream"), [
    ("claude-sonnet-4-6", "claude-sonnet-4.6"), ("claude-opus-4-8", "claude-opus-4.8"), ("claude-opus-4-9-latest", "claude-opus-4.9"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4.5"), ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ("claude-3-7-sonnet-20250219", "claude-3.7-sonnet"), ("claude-sonnet-5", "claude-sonnet-5"), ("auto", None),
    ("deepseek-3.2", None), ("gpt-4o", None),
])
def test_one_rule_reads_every_claude_spelling_as_kiros_dotted_id(name: str, upstream: str | None) -> None:
    assert dotted(name) == upstream


def test_context_windows_default_to_a_million_for_sonnet_and_opus_from_4_6() -> None:
    windows = {m: static_models()[m].window for m in ("claude-sonnet-4.6", "claude-sonnet-5", "claude-opus-4.6",
                                                      "claude-opus-4.8", "claude-sonnet-4.5", "claude-haiku-4.5", "glm-5")}
    assert windows == {"claude-sonnet-4.6": 1_000_000, "claude-sonnet-5": 1_000_000, "claude-opus-4.6": 1_000_000,
                       "claude-opus-4.8": 1_000_000, "claude-sonnet-4.5": 200_000, "claude-haiku-4.5": 200_000, "glm-5": 200_000}
    listed = {m.id: m.window for m in parse_catalog({"models": [{"modelId": "claude-opus-4.6"}, {"modelId": "claude-haiku-4.5"}]})}
    assert listed == {"claude-opus-4.6": 1_000_000, "claude-haiku-4.5": 200_000}


def test_long_and_odd_tool_names_are_shortened_stably() -> None:
    name = "mcp__filesystem__" + "read_" * 20
    assert upstream_name(name) == upstream_name(name) and len(upstream_name(name)) == 64
    assert upstream_name("a.b") != "a.b" and upstream_name("fine_name-1") == "fine_name-1"
    names = ToolNames([name, "a.b"])
    assert names.client(upstream_name(name)) == name and names.client("unknown") == "unknown"


def test_descriptions_are_never_empty_nor_over_long() -> None:
    assert tool_description("f", "  ") == "Tool: f"
    assert len(tool_description("f", "x" * 20_000)) == 10_000


def test_schemas_are_flattened_into_what_kiro_takes() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
                  "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "properties": {
            "name": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "description": "who"},
            "kind": {"type": ["string", "null"], "enum": ["a", "b", None]},
            "mode": {"const": "fast"},
            "where": {"$ref": "#/$defs/Point"},
            "shape": {"oneOf": [{"type": "object", "properties": {"r": {"type": "number"}}, "required": ["r"]},
                                {"type": "object", "properties": {"w": {"type": "number"}, "r": {"type": "number"}},
                                 "required": ["w", "r"]}]},
            "both": {"allOf": [{"properties": {"a": {"type": "string"}}}, {"properties": {"b": {"type": "string"}}}]},
            "list": {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]}},
            "chain": {"$ref": "#/$defs/Node"},
        },
        "required": ["name", "missing"],
    }
    cleaned = sanitize_schema(schema)
    props = cleaned["properties"]
    assert cleaned["type"] == "object" and cleaned["required"] == ["name"]
    assert "$schema" not in cleaned and "additionalProperties" not in cleaned and "$defs" not in cleaned
    assert props["name"] == {"type": "string", "description": "who"}
    assert props["kind"] == {"type": "string", "enum": ["a", "b"]}
    assert props["mode"] == {"enum": ["fast"]}
    assert props["where"] == {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
    assert props["shape"]["properties"].keys() == {"r", "w"} and props["shape"]["required"] == ["r"]
    assert props["both"]["properties"].keys() == {"a", "b"}
    assert props["list"] == {"type": "array", "items": {"type": "integer"}}
    assert props["chain"]["properties"]["next"] == {"type": "object"}  # the recursion is cut, not followed forever
    body = body_for([Message(role="user", content="hi")], tools=(ToolSpec("t", "d", schema),))
    assert check_body(body, set(MODELS), set()) is None


@pytest.mark.parametrize("schema", [{}, {"type": "string"}, {"properties": {"a": {}}}, {"type": "object"}])
def test_any_schema_becomes_an_object_schema(schema: dict[str, Any]) -> None:
    cleaned = sanitize_schema(schema)
    assert cleaned["type"] == "object" and isinstance(cleaned["properties"], dict)


def test_the_input_estimate_counts_what_is_sent_and_the_hidden_prompt() -> None:
    body = body_for([Message(role="user", content="word " * 400)])
    assert HIDDEN_PROMPT_TOKENS + 400 < estimate_input_tokens(body) < HIDDEN_PROMPT_TOKENS + 700


def random_history(rng: random.Random) -> list[Message]:
    """Any sequence of roles, contents and tool traffic a client might send, valid or not for Kiro."""
    messages: list[Message] = []
    calls: list[str] = []
    for _ in range(rng.randint(0, 12)):
        kind = rng.choice(["system", "user", "user", "assistant", "assistant", "tool", "tool", "empty"])
        text = rng.choice(["", "  ", "hello", "春天", "x" * 30])
        if kind == "system":
            messages.append(Message(role="system", content=text))
        elif kind in ("user", "empty"):
            messages.append(Message(role="user", content=text if kind == "user" else ""))
        elif kind == "assistant":
            new = [f"call_{rng.randrange(10**6)}" for _ in range(rng.randint(0, 3))]
            calls += new
            name = rng.choice(["get_weather", "search.web", "w" * 70, "get_weather"])
            messages.append(Message(role="assistant", content=text or None,
                                    tool_calls=[ToolCall(c, name, rng.choice(["{}", '{"a": 1}', "oops", ""])) for c in new]))
        elif kind == "tool":
            call_id = rng.choice([*calls, "call_unknown"]) if calls else "call_unknown"
            messages.append(Message(role="tool", content=text, tool_call_id=call_id))
    return messages


@pytest.mark.parametrize("seed", range(300))
def test_any_history_goes_out_in_a_shape_kiro_takes(seed: int) -> None:
    rng = random.Random(seed)
    tools = (WEATHER,) if rng.random() < 0.5 else ()
    body = body_for(random_history(rng), tools=tools, offer_tools=rng.random() < 0.8)
    assert check_body(body, set(MODELS), set()) is None


def test_a_schema_whose_refs_multiply_is_cut_not_expanded_forever() -> None:
    """Each level refers to the next twice: inlined in full that would be 2**30 nodes."""
    defs = {f"L{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/L{i + 1}"}, "b": {"$ref": f"#/$defs/L{i + 1}"}}}
            for i in range(30)}
    defs["L30"] = {"type": "string"}
    cleaned = sanitize_schema({"type": "object", "$defs": defs, "properties": {"root": {"$ref": "#/$defs/L0"}}})
    assert cleaned["type"] == "object" and len(json.dumps(cleaned)) < 5_000_000
