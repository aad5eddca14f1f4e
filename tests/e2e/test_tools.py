"""Tool calling emulated for K2Think, through the gateway, with the official `openai` SDK."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.gateway import GatewayServer
from tests.upstreams import K2ThinkEmulator, Reply

MODEL = "MBZUAI-IFM/K2-Think-v2"
TOOLS: list[dict[str, Any]] = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}]
ARGS = {"city": "Paris", "unit": "c"}


def _token(body: dict[str, Any]) -> str:
    system = "\n".join(str(m["content"]) for m in body["messages"] if m["role"] == "system")
    match = re.search(r"<tool_call_([A-Za-z0-9]+)>", system)
    assert match, "the tool prompt with its marker did not reach the upstream"
    return match.group(1)


def _call_text(fmt: str, body: dict[str, Any]) -> str:
    call = {"name": "get_weather", "arguments": ARGS}
    if fmt == "marker":
        token = _token(body)
        return f"Let me check.\n<tool_call_{token}>\n{json.dumps(call)}\n</tool_call_{token}>"
    if fmt == "tool_call_tags":
        return f"Let me check.\n<tool_call>{json.dumps(call)}</tool_call>"
    if fmt == "fenced_json":
        return "Let me check.\n```json\n" + json.dumps({"tool_calls": [call]}) + "\n```"
    if fmt == "inline_json":
        return "Let me check. " + json.dumps({"tool_calls": [{"function": "get_weather", "arguments": json.dumps(ARGS)}]})
    raise AssertionError(fmt)


def agent_model(fmt: str) -> Callable[[dict[str, Any]], Reply]:
    """A scripted model: calls the tool, and answers from the result once it has one."""

    def respond(body: dict[str, Any]) -> Reply:
        last = str(body["messages"][-1]["content"])
        result = re.search(r"<tool_result_[A-Za-z0-9]+ [^>]*>\s*(.*?)\s*</tool_result", last, re.S)
        if result:
            return Reply(reasoning="I have the weather now.", answer=f"In Paris it is {result.group(1)}.")
        return Reply(reasoning="I need the weather tool.", raw_content=None, answer=_call_text(fmt, body))

    return respond


FORMATS = ["marker", "tool_call_tags", "fenced_json", "inline_json"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_streamed_tool_call(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], fmt: str) -> None:
    k2emu.responder = agent_model(fmt)
    reply = k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS,  # type: ignore[arg-type]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls  # type: ignore[misc]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == ARGS
    assert choice.message.content in ("Let me check.", None)
    assert "tool_call" not in (choice.message.content or "") and "{" not in (choice.message.content or "")
    upstream = k2emu.last_request
    assert upstream is not None and "tools" not in upstream.json


@pytest.mark.parametrize("fmt", FORMATS)
def test_streamed_tool_call(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], fmt: str) -> None:
    k2emu.responder = agent_model(fmt)
    k2emu.split_writes, k2emu.split_size = True, (3, 1, 7)
    client = k2_gateway().openai()
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS, stream=True,  # type: ignore[arg-type]
    ))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "tool_call" not in content and "{" not in content
    tool_deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    first, rest = tool_deltas[0], tool_deltas[1:]
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function"  # type: ignore[union-attr]
    assert first.function.name == "get_weather" and first.function.arguments == ""  # type: ignore[union-attr]
    assert rest and all(d.index == 0 and d.id is None and d.function.name is None for d in rest)  # type: ignore[union-attr]
    assert json.loads("".join(d.function.arguments for d in rest)) == ARGS  # type: ignore[union-attr]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    with client.chat.completions.stream(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_completion()
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == ARGS  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
def test_agent_loop_delivers_the_tool_result_upstream(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    k2emu.responder = agent_model("marker")
    client = k2_gateway().openai()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18°C and sunny"})
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, stream=True))  # type: ignore[arg-type]
        answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        answer = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS).choices[0].message.content or ""  # type: ignore[arg-type]
    assert answer == "In Paris it is 18°C and sunny."
    sent = k2emu.last_request
    assert sent is not None
    upstream_text = json.dumps(sent.json["messages"], ensure_ascii=False)
    assert "18°C and sunny" in upstream_text and call.id in upstream_text and 'name=\\"get_weather\\"' in upstream_text


def test_tool_choice_none_returns_plain_text(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.reply = Reply(reasoning="No tools.", answer='Here is how: <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>')
    reply = k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Explain the format"}], tools=TOOLS, tool_choice="none",  # type: ignore[arg-type]
    )
    assert reply.choices[0].finish_reason == "stop" and not reply.choices[0].message.tool_calls
    assert "<tool_call>" in (reply.choices[0].message.content or "")


def test_tool_syntax_in_reasoning_is_not_a_call(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.reply = Reply(reasoning='Maybe <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>? No.', answer="No tool needed: it is Paris.")
    reply = k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Where is the Louvre?"}], tools=TOOLS,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content == "No tool needed: it is Paris." and not reply.choices[0].message.tool_calls


def test_required_gets_a_corrective_round(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    calls = {"n": 0}

    def respond(body: dict[str, Any]) -> Reply:
        calls["n"] += 1
        if calls["n"] == 1:
            return Reply(answer="It is probably sunny.")
        return Reply(answer=_call_text("marker", body))

    k2emu.responder = respond
    reply = k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, tool_choice="required",  # type: ignore[arg-type]
    )
    assert reply.choices[0].finish_reason == "tool_calls" and calls["n"] == 2
    assert "probably sunny" not in (reply.choices[0].message.content or "")


def test_invalid_arguments_get_a_repair_round(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        token = _token(body)
        bad = not any("city" in str(m["content"]) and "required" in str(m["content"]) and m["role"] == "user" for m in body["messages"][1:])
        args = {"unit": "kelvin"} if bad else ARGS
        return Reply(answer=f"<tool_call_{token}>{json.dumps({'name': 'get_weather', 'arguments': args})}</tool_call_{token}>")

    k2emu.responder = respond
    reply = k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS,  # type: ignore[arg-type]
    )
    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments) == ARGS  # type: ignore[index]
    assert len(k2emu.requests_to("/api/chat/completions")) == 2


def test_truncated_call_finishes_with_length(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        token = _token(body)
        return Reply(answer=f'<tool_call_{token}>\n{{"name": "get_weather", "arguments": {{"city": "Par', finish_reason="length")

    k2emu.responder = respond
    k2emu.shape = "delta_tags"
    reply = k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS,  # type: ignore[arg-type]
    )
    assert reply.choices[0].finish_reason == "length" and not reply.choices[0].message.tool_calls


def test_toolify_disabled_sends_no_tool_prompt(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(enable_toolify=False)
    reply = gw.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls
    sent = k2emu.last_request
    assert sent is not None and "tool_call" not in json.dumps(sent.json["messages"])


def test_custom_prompt_template(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    from chatbridge.features.tools import DEFAULT_TEMPLATE

    placeholders = re.findall(r"\{[a-z_]+\}", DEFAULT_TEMPLATE)
    template = "CUSTOM TOOL PROMPT\n" + "\n".join(dict.fromkeys(placeholders))
    gw = k2_gateway(toolify_custom_prompt=template)
    k2emu.responder = agent_model("marker")
    reply = gw.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS)  # type: ignore[arg-type]
    assert reply.choices[0].message.tool_calls
    sent = k2emu.requests_to("/api/chat/completions")[0]
    assert "CUSTOM TOOL PROMPT" in json.dumps(sent.json["messages"]) and "get_weather" in json.dumps(sent.json["messages"])


def test_openai_compat_can_emulate_tools(compat_emu: Any, start_gateway: Callable[..., GatewayServer]) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        assert "tools" not in body
        return Reply(answer=_call_text("marker", body))

    compat_emu.responder = respond
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_emulate_tools=True, k2think_enabled=False)
    reply = gw.openai().chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS)  # type: ignore[arg-type]
    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments) == ARGS  # type: ignore[index]
