"""What agents really send, through the gateway with the official `openai` SDK.

Requests shaped like the OpenAI Agents SDK's (strict pydantic schemas with `$defs` and
Optional-as-`anyOf`, a handoff tool with an empty schema, an MCP tool with a draft-07 schema,
a tool without parameters, parallel calls, tool results as content-part arrays), malformed tool
inputs (clear 400s in the OpenAI envelope, never a 500), and both modes of the OpenAI-compatible
provider (native tools passed through; emulated with OPENAI_COMPAT_EMULATE_TOOLS).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator, Reply

MODEL = "MBZUAI-IFM/K2-Think-v2"
SYSTEM = {"role": "system", "content": "You are a travel assistant. Use the tools."}
USER = {"role": "user", "content": "Weather in Paris, visa rules, and the time?"}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "properties": {
                "city": {"title": "City", "type": "string"},
                "unit": {"anyOf": [{"enum": ["c", "f"], "type": "string"}, {"type": "null"}], "default": None, "title": "Unit"},
                "place": {"anyOf": [{"$ref": "#/$defs/Place"}, {"type": "null"}], "default": None},
            },
            "required": ["city", "unit", "place"],
            "title": "get_weather_args",
            "type": "object",
            "additionalProperties": False,
            "$defs": {"Place": {"properties": {"lat": {"type": "number"}, "lon": {"type": "number"}}, "required": ["lat", "lon"], "type": "object", "additionalProperties": False}},
        },
        "strict": True,
    },
}
HANDOFF = {
    "type": "function",
    "function": {
        "name": "transfer_to_billing_agent",
        "description": "Handoff to the Billing agent to handle the request.",
        "parameters": {"type": "object", "properties": {}, "required": [], "additionalProperties": False},
        "strict": True,
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "docs__search",
        "description": "Search the travel documentation (MCP server tool).",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"query": {"type": "string"}, "top_k": {"type": "integer", "minimum": 1, "default": 3}},
            "required": ["query"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The current time."}}  # no parameters at all
AGENT_TOOLS = [WEATHER, HANDOFF, SEARCH, TIME]
CALLS = [
    ("get_weather", {"city": "Paris", "unit": None, "place": {"lat": 48.86, "lon": 2.35}}),
    ("docs__search", {"query": "visa rules France"}),
    ("get_time", {}),
]
RESULTS = {"get_weather": "sunny, 21C", "docs__search": "Schengen: 90 days in any 180.", "get_time": "14:05 CET"}


def _token(body: dict[str, Any]) -> str:
    system = "\n".join(str(m["content"]) for m in body["messages"] if m["role"] == "system")
    match = re.search(r"<tool_call_([a-z0-9]+)>", system)
    assert match, "no tool prompt reached the upstream"
    return match.group(1)


def _blocks(token: str, calls: list[tuple[str, Any]]) -> str:
    return "\n".join(f"<tool_call_{token}>\n{json.dumps({'name': n, 'arguments': a})}\n</tool_call_{token}>" for n, a in calls)


def travel_model(body: dict[str, Any]) -> Reply:
    """Calls three tools at once; once it has the results, answers from them."""
    last = str(body["messages"][-1]["content"])
    results = dict(re.findall(r'<tool_result_[a-z0-9]+ name="([^"]+)" call_id="[^"]+">\s*(.*?)\s*</tool_result_', last, re.S))
    if results:
        return Reply(reasoning="I have everything.", answer=f"Paris: {results['get_weather']}. Visa: {results['docs__search']} Time: {results['get_time']}.")
    return Reply(reasoning="Three lookups, in parallel.", answer="I'll look these up.\n" + _blocks(_token(body), CALLS))


def _first_turn(client: openai.OpenAI, stream: bool, model: str = MODEL) -> Any:
    kwargs: dict[str, Any] = {"model": model, "messages": [SYSTEM, USER], "tools": AGENT_TOOLS}
    if not stream:
        return client.chat.completions.create(**kwargs)
    with client.chat.completions.stream(**kwargs) as events:
        return events.get_final_completion()


@pytest.mark.parametrize("stream", [False, True])
def test_agent_style_parallel_calls_and_results(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    k2emu.responder = travel_model
    client = k2_gateway().openai()
    first = _first_turn(client, stream)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and message.content == "I'll look these up."
    calls = message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == CALLS
    assert len({c.id for c in calls}) == 3 and all(re.fullmatch(r"call_[A-Za-z0-9]{24}", c.id) for c in calls)
    prompt = k2emu.requests_to("/api/chat/completions")[0].json["messages"]
    assert [m["role"] for m in prompt] == ["system", "user"]  # one system turn: the agent's instructions, then the tools
    assert prompt[0]["content"].startswith(SYSTEM["content"] + "\n\n# Tools\n")
    for tool in AGENT_TOOLS:
        assert f"## {tool['function']['name']}" in prompt[0]["content"]  # type: ignore[index]
    assert "- unit (string or null, required)" in prompt[0]["content"]

    history: list[dict[str, Any]] = [SYSTEM, USER, message.model_dump(exclude_none=True)]
    for call in calls:
        result = RESULTS[call.function.name]
        content: Any = [{"type": "text", "text": result}] if call.function.name == "docs__search" else result
        history.append({"role": "tool", "tool_call_id": call.id, "content": content})
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=history, tools=AGENT_TOOLS, stream=True))  # type: ignore[arg-type]
        answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        answer = client.chat.completions.create(model=MODEL, messages=history, tools=AGENT_TOOLS).choices[0].message.content or ""  # type: ignore[arg-type]
    assert answer == "Paris: sunny, 21C. Visa: Schengen: 90 days in any 180. Time: 14:05 CET."

    sent = k2emu.last_request.json["messages"]  # type: ignore[union-attr]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]  # no role the upstream cannot read
    token = _token(k2emu.last_request.json)  # type: ignore[union-attr]
    assert sent[2]["content"].startswith("I'll look these up.")
    assert _blocks(token, CALLS).replace("\n", "") in sent[2]["content"].replace("\n", "")  # earlier calls, same format
    for call in calls:  # each result with the tool's name (found from its call id) and the call id
        opening = f'<tool_result_{token} name="{call.function.name}" call_id="{call.id}">'
        assert f"{opening}\n{RESULTS[call.function.name]}\n</tool_result_{token}>" in sent[3]["content"]


def test_agent_style_streamed_deltas_are_shaped_like_openai(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.responder = travel_model
    k2emu.split_writes, k2emu.split_size = True, (2, 9, 4)
    chunks = [c for c in k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=[SYSTEM, USER], tools=AGENT_TOOLS, stream=True, stream_options={"include_usage": True},  # type: ignore[arg-type]
    )]
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    heads = [d for d in deltas if d.id is not None]
    assert [(h.index, h.type, h.function.name, h.function.arguments) for h in heads] == [  # type: ignore[union-attr]
        (0, "function", "get_weather", ""), (1, "function", "docs__search", ""), (2, "function", "get_time", ""),
    ]
    indexes = [d.index for d in deltas]
    assert indexes == sorted(indexes)  # all fragments of call 0, then call 1, then call 2
    for index, (_, arguments) in enumerate(CALLS):
        fragments = [d for d in deltas if d.index == index and d.id is None]
        assert fragments and all(d.type is None and d.function.name is None for d in fragments)  # type: ignore[union-attr]
        assert json.loads("".join(d.function.arguments for d in fragments)) == arguments  # type: ignore[union-attr, misc]
    with_choices = [c for c in chunks if c.choices]
    assert [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason] == ["tool_calls"]
    assert with_choices[-1].choices[0].finish_reason == "tool_calls" and not chunks[-1].choices and chunks[-1].usage


def test_a_strict_tool_call_with_a_missing_key_is_repaired(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        token = _token(body)
        if len(body["messages"]) == 2:  # system (the agent's, with the tools), user: the answer round
            return Reply(answer=_blocks(token, [("get_weather", {"city": "Paris"})]))
        return Reply(answer=_blocks(token, [CALLS[0]]))

    k2emu.responder = respond
    reply = k2_gateway().openai().chat.completions.create(model=MODEL, messages=[SYSTEM, USER], tools=AGENT_TOOLS)  # type: ignore[arg-type]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in reply.choices[0].message.tool_calls or []] == [CALLS[0]]
    repair = k2emu.requests_to("/api/chat/completions")[1].json["messages"][-1]["content"]
    assert "call 1 (get_weather): arguments: 'unit' is a required property" in repair


def test_a_handoff_tool_without_arguments(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.responder = lambda body: Reply(answer=f'<tool_call_{_token(body)}>{{"name": "transfer_to_billing_agent"}}</tool_call_{_token(body)}>')
    reply = k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=[SYSTEM, {"role": "user", "content": "I was charged twice."}], tools=AGENT_TOOLS, tool_choice="required",  # type: ignore[arg-type]
    )
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "transfer_to_billing_agent" and call.function.arguments == "{}"
    assert reply.choices[0].message.content is None and reply.choices[0].finish_reason == "tool_calls"


# -- malformed tool inputs --------------------------------------------------------------------------------

FN = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
MALFORMED: list[tuple[str, dict[str, Any], str, str]] = [
    ("duplicate names", {"tools": [FN, FN]}, "tools[1].function.name", "function names must be unique"),
    ("a schema that is not an object schema", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}, "tools[0].function.parameters", "must have type 'object'"),
    ("an invalid type in the schema", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"q": {"type": "text"}}}}}]}, "tools[0].function.parameters", "parameters.properties.q.type"),
    ("properties as a list", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": ["q"]}}}]}, "tools[0].function.parameters", "is not of type 'object'"),
    ("parameters that are not an object", {"tools": [{"type": "function", "function": {"name": "f", "parameters": "q: string"}}]}, "tools[0].function.parameters", "tools[0].function.parameters"),
    ("a tool name with spaces", {"tools": [{"type": "function", "function": {"name": "look up"}}]}, "tools[0].function.name", "tools[0].function.name"),
    ("a tool without a function", {"tools": [{"type": "function"}]}, "tools[0].function", "tools[0].function"),
    ("an unknown tool type", {"tools": [{"type": "web_search"}]}, "tools[0].type", "tools[0].type"),
    ("tool_choice naming an unknown function", {"tools": [FN], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "no tool named 'nope'"),
    ("tool_choice naming a function without tools", {"tool_choice": {"type": "function", "function": {"name": "lookup"}}}, "tool_choice", "no 'tools' are specified"),
    ("tool_choice required without tools", {"tool_choice": "required"}, "tool_choice", "no 'tools' are specified"),
    ("an unknown tool_choice", {"tools": [FN], "tool_choice": "always"}, "tool_choice", "tool_choice"),
    ("a tool message without tool_call_id", {"messages": [USER, {"role": "tool", "content": "x"}]}, "messages[1].tool_call_id", "tool_call_id"),
    ("tool call arguments as an object", {"messages": [USER, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "lookup", "arguments": {"q": 1}}}]}]}, "messages[1].tool_calls[0].function.arguments", "arguments"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_tool_inputs_are_clear_400s(
    k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], case: tuple[str, dict[str, Any], str, str], stream: bool
) -> None:
    _, fields, param, words = case
    body = {"model": MODEL, "messages": [USER], **fields}
    gw = k2_gateway()
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai().chat.completions.create(stream=stream, **body)
    error = caught.value
    assert error.status_code == 400 and error.param == param and words in error.message
    with gw.http() as http:
        raw = http.post("/v1/chat/completions", json={**body, "stream": stream})
    assert raw.status_code == 400 and raw.headers["content-type"].startswith("application/json")
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"} and raw.json()["error"]["type"] == "invalid_request_error"
    assert k2emu.requests_to("/api/chat/completions") == []  # refused before anything went upstream


# -- the OpenAI-compatible provider ---------------------------------------------------------------------


@pytest.fixture
def compat_gateway(compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> Callable[..., GatewayServer]:
    def start(**overrides: Any) -> GatewayServer:
        return start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", k2think_enabled=False, **overrides)

    return start


def test_native_tools_and_tool_history_pass_through_untouched(compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.answer = "Done."
    history: list[dict[str, Any]] = [
        SYSTEM, USER,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": null, "place": null}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "sunny"}]},
        {"role": "tool", "tool_call_id": "call_b", "content": "14:05"},
    ]
    reply = compat_gateway().openai().chat.completions.create(
        model="fake-model", messages=history, tools=AGENT_TOOLS, parallel_tool_calls=False,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert reply.choices[0].message.content == "Done."
    sent = compat_emu.last_request.json  # type: ignore[union-attr]
    assert sent["messages"] == history  # nothing rewritten, no prompt injected
    assert [t["function"] for t in sent["tools"]] == [t["function"] for t in AGENT_TOOLS]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_time"}} and sent["parallel_tool_calls"] is False


@pytest.mark.parametrize("stream", [False, True])
def test_openai_compat_emulated_agent_loop(compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    compat_emu.responder = travel_model
    client = compat_gateway(openai_compat_emulate_tools=True).openai()
    first = _first_turn(client, stream, model="fake-model")
    calls = first.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == CALLS
    sent = compat_emu.last_request.json  # type: ignore[union-attr]
    assert "tools" not in sent and "tool_choice" not in sent and "parallel_tool_calls" not in sent
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]  # a single system turn, as strict templates need
    history = [SYSTEM, USER, first.choices[0].message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": c.id, "content": RESULTS[c.function.name]} for c in calls]
    reply = client.chat.completions.create(model="fake-model", messages=history, tools=AGENT_TOOLS)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "Paris: sunny, 21C. Visa: Schengen: 90 days in any 180. Time: 14:05 CET."
    sent = compat_emu.last_request.json  # type: ignore[union-attr]
    assert {m["role"] for m in sent["messages"]} == {"system", "user", "assistant"}
    assert all("tool_calls" not in m and "tool_call_id" not in m for m in sent["messages"])
    assert all(c.id in sent["messages"][-1]["content"] for c in calls)


def test_openai_compat_emulation_streams_like_openai(compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.responder = travel_model
    compat_emu.stream_chunks = 9
    gw = compat_gateway(openai_compat_emulate_tools=True)
    with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {gw.api_key}"}, timeout=30) as http:
        response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": [USER], "tools": AGENT_TOOLS, "stream": True})
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    deltas = [json.loads(line)["choices"][0]["delta"] for line in lines[:-1]]
    assert deltas[0] == {"role": "assistant", "content": "", "refusal": None}  # role once, in the first chunk
    assert sum("role" in d for d in deltas) == 1
    content = "".join(d.get("content") or "" for d in deltas)
    assert content == "I'll look these up."
    tool_deltas = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert all(len(d.get("tool_calls", [])) <= 1 for d in deltas)  # one entry per chunk, never merged
    heads = [tc for tc in tool_deltas if "id" in tc]
    assert [set(h) for h in heads] == [{"index", "id", "type", "function"}] * 3
    assert all(h["function"] == {"name": name, "arguments": ""} for h, (name, _) in zip(heads, CALLS, strict=True))
    assert all(set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"} for tc in tool_deltas if "id" not in tc)
    finishes = [json.loads(line)["choices"][0]["finish_reason"] for line in lines[:-1]]
    assert finishes[-1] == "tool_calls" and finishes.count("tool_calls") == 1 and deltas[-1] == {}
