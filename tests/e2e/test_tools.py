"""Tool calling emulated for K2Think, through the gateway, with the official `openai` SDK."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, Reply
from tests.upstreams.k2think import SHAPES

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
    if fmt == "fenced_openai_shape":
        openai_call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(ARGS)}}
        return "Let me check.\n```\n" + json.dumps({"tool_calls": [openai_call]}, indent=2) + "\n```"
    if fmt == "tool_call_function_key":
        return "Let me check.\n<tool_call>\n" + json.dumps({"function": "get_weather", "arguments": json.dumps(ARGS)}) + "\n</tool_call>"
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


FORMATS = ["marker", "tool_call_tags", "fenced_json", "inline_json", "fenced_openai_shape", "tool_call_function_key"]


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
    assert choice.message.content == "Let me check."  # the text before the call, no call syntax
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
    assert content == "Let me check."  # streamed before the call; the call syntax never leaks
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
    assert reply.choices[0].message.content == "Here is how:"  # the call is not made, and its markup not shown


@pytest.mark.parametrize("stream", [False, True])
def test_tool_choice_none_strips_a_call_block_the_model_writes_anyway(
    k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool,
) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        call = _call_text("marker", body).removeprefix("Let me check.\n")
        return Reply(reasoning="The user said no tools.", raw_content=None, answer=f"I would check:\n{call}\nBut it is usually mild in Paris.")

    k2emu.responder = respond
    k2emu.split_writes, k2emu.split_size = True, (3, 1, 7)
    client = k2_gateway().openai()
    request: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS, "tool_choice": "none"}
    if stream:
        chunks = list(client.chat.completions.create(**request, stream=True))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        reply = client.chat.completions.create(**request)
        content, finish = reply.choices[0].message.content or "", [reply.choices[0].finish_reason]
        assert not reply.choices[0].message.tool_calls
    assert content == "I would check:\nBut it is usually mild in Paris."
    assert "tool_call" not in content and finish == ["stop"]


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


@pytest.mark.parametrize("stream", [False, True])
def test_truncated_call_finishes_with_length(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        token = _token(body)
        return Reply(answer=f'Checking.\n<tool_call_{token}>\n{{"name": "get_weather", "arguments": {{"city": "Par', finish_reason="length")

    k2emu.responder = respond
    k2emu.shape = "delta_tags"
    client = k2_gateway().openai()
    kwargs: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Weather?"}], "tools": TOOLS}
    if stream:
        chunks = [c for c in client.chat.completions.create(stream=True, **kwargs) if c.choices]
        assert not any(c.choices[0].delta.tool_calls for c in chunks)  # never an empty-argument call
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    else:
        reply = client.chat.completions.create(**kwargs)
        assert not reply.choices[0].message.tool_calls
        content, finish = reply.choices[0].message.content or "", [reply.choices[0].finish_reason]
    assert finish == ["length"] and content.strip() == "Checking." and "tool_call" not in content
    assert len(k2emu.requests_to("/api/chat/completions")) == 1  # a cut-off answer is not repaired


def test_toolify_disabled_sends_no_tool_prompt(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(enable_toolify=False)
    reply = gw.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls
    sent = k2emu.last_request
    assert sent is not None and "tool_call" not in json.dumps(sent.json["messages"])


ORIGINAL_STYLE_TEMPLATE = (
    "CUSTOM TOOL PROMPT. Available tools:\n{tools_list}\n"
    'To call one, write {trigger_signal} then {"name": ..., "arguments": {...}} then {close_tag}. JSON braces stay.'
)


@pytest.mark.parametrize("style", ["default placeholders", "original-tool placeholders"])
def test_custom_prompt_template(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], style: str) -> None:
    from chatbridge.features.tools import DEFAULT_TEMPLATE

    if style == "default placeholders":
        placeholders = re.findall(r"\{[a-z_]+\}", DEFAULT_TEMPLATE)
        template = "CUSTOM TOOL PROMPT\n" + "\n".join(dict.fromkeys(placeholders))
    else:
        template = ORIGINAL_STYLE_TEMPLATE
    gw = k2_gateway(toolify_custom_prompt=template)
    k2emu.responder = agent_model("marker")
    reply = gw.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS)  # type: ignore[arg-type]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in reply.choices[0].message.tool_calls or []] == [("get_weather", ARGS)]
    system = k2emu.requests_to("/api/chat/completions")[0].json["messages"][0]["content"]
    token = _token({"messages": [{"role": "system", "content": system}]})
    assert system.startswith("CUSTOM TOOL PROMPT") and "## get_weather" in system and "Current weather for a city" in system
    assert not re.search(r"\{(tool_list|tools_list|call_format|open_tag|trigger_signal|close_tag)\}", system)  # all substituted
    if style == "original-tool placeholders":
        assert f'write <tool_call_{token}> then {{"name": ..., "arguments": {{...}}}} then </tool_call_{token}>. JSON braces stay.' in system


def test_openai_compat_can_emulate_tools(compat_emu: Any, start_gateway: Callable[..., GatewayServer]) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        assert "tools" not in body
        return Reply(answer=_call_text("marker", body))

    compat_emu.responder = respond
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_emulate_tools=True, k2think_enabled=False)
    reply = gw.openai().chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS)  # type: ignore[arg-type]
    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments) == ARGS  # type: ignore[index]


def _complete(client: Any, stream: bool, kwargs: dict[str, Any]) -> Any:
    """The final completion, through the SDK's stream helper (which accumulates the deltas) or not streamed."""
    if stream:
        with client.chat.completions.stream(**kwargs) as events:
            return events.get_final_completion()
    return client.chat.completions.create(**kwargs)


def _marker_call(body: dict[str, Any], name: str, arguments: dict[str, Any]) -> str:
    token = _token(body)
    return f"<tool_call_{token}>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call_{token}>"


def test_streamed_text_before_a_call_arrives_while_the_call_is_still_being_written(
    k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]
) -> None:
    """The preamble reaches the client long before the upstream has finished the call."""
    k2emu.responder = lambda body: Reply(
        reasoning="I need the tool.", answer="Let me check the weather for you.\n" + _marker_call(body, "get_weather", ARGS)
    )
    k2emu.shape, k2emu.stream_chunks, k2emu.chunk_delay = "delta_tags", 8, 0.15
    stream = k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS, stream=True,  # type: ignore[arg-type]
    )
    first_text = first_call = None
    content = ""
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None and delta.content and first_text is None:
            first_text = time.monotonic()
        if delta is not None and delta.tool_calls and first_call is None:
            first_call = time.monotonic()
        content += (delta.content or "") if delta is not None else ""
    assert first_text is not None and first_call is not None
    assert first_call - first_text > 0.4  # several upstream events apart, not released together
    assert content == "Let me check the weather for you."


@pytest.mark.parametrize("stream", [False, True])
def test_a_false_alarm_is_released_as_text(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    """Marker-like text that is not a call: all of it reaches the client as content, nothing is held or lost."""
    texts: list[str] = []

    def respond(body: dict[str, Any]) -> Reply:
        token = _token(body)
        texts.append(
            f"I would write <tool_call_{token}> and then JSON, and <tool_call> is another tag; "
            'an object like {"tool_calls": "none"} is not a call, nor is `{"tool_calls": [...]}`. Ends with <tool_ca'
        )
        return Reply(answer=texts[-1])

    k2emu.responder = respond
    k2emu.split_writes, k2emu.split_size = True, (1, 2, 5)
    client = k2_gateway().openai()
    kwargs: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "How do you call tools?"}], "tools": TOOLS}
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        reply = client.chat.completions.create(**kwargs)
        content, finish = reply.choices[0].message.content or "", [reply.choices[0].finish_reason]
        assert not reply.choices[0].message.tool_calls
    assert content == texts[-1] and finish == ["stop"]
    assert len(k2emu.requests_to("/api/chat/completions")) == 1  # no repair round for prose


@pytest.mark.parametrize("stream", [False, True])
def test_a_marker_call_inside_reasoning_is_not_a_call(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        return Reply(reasoning="Should I? " + _marker_call(body, "get_weather", ARGS) + " No, I know it.", answer="The Louvre is in Paris.")

    k2emu.responder = respond
    client = k2_gateway().openai()
    kwargs: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Where is the Louvre?"}], "tools": TOOLS}
    if stream:
        chunks = [c for c in client.chat.completions.create(stream=True, **kwargs) if c.choices]
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
        reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks)
        calls = [c for c in chunks if c.choices[0].delta.tool_calls]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    else:
        reply = client.chat.completions.create(**kwargs)
        message = reply.choices[0].message
        content, reasoning = message.content or "", message.reasoning_content  # type: ignore[attr-defined]
        calls, finish = message.tool_calls or [], [reply.choices[0].finish_reason]
    assert content == "The Louvre is in Paris." and calls == [] and finish == ["stop"]
    assert "<tool_call_" in reasoning  # the reasoning is passed on untouched


def test_tool_choice_none_streams_plain_text(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.responder = lambda body: Reply(answer="Like this: " + _marker_call(body, "get_weather", ARGS))
    chunks = [c for c in k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Show the format"}], tools=TOOLS, tool_choice="none", stream=True,  # type: ignore[arg-type]
    ) if c.choices]
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content == "Like this:"  # the block is neither called nor shown (issue 10, point 21)
    assert not any(c.choices[0].delta.tool_calls for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]
    system = k2emu.requests_to("/api/chat/completions")[0].json["messages"][0]["content"]
    assert "disabled" in system and "get_weather" not in system  # no tool is offered


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_calls_false_returns_one_call(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    k2emu.responder = lambda body: Reply(
        answer=_marker_call(body, "get_weather", {"city": "Paris"}) + "\n" + _marker_call(body, "get_weather", {"city": "Nice"})
    )
    client = k2_gateway().openai()
    kwargs: dict[str, Any] = {
        "model": MODEL, "messages": [{"role": "user", "content": "Paris and Nice?"}], "tools": TOOLS, "parallel_tool_calls": False,
    }
    reply = _complete(client, stream, kwargs)
    calls = reply.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert reply.choices[0].finish_reason == "tool_calls"
    system = k2emu.requests_to("/api/chat/completions")[0].json["messages"][0]["content"]
    assert "at most one tool per reply" in system


@pytest.mark.parametrize("stream", [False, True])
def test_named_tool_choice_gets_a_corrective_round(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    tools = [*TOOLS, {"type": "function", "function": {"name": "get_time", "description": "The time", "parameters": {"type": "object", "properties": {}}}}]

    def respond(body: dict[str, Any]) -> Reply:
        if len(body["messages"]) == 2:  # system prompt + the user turn: the answer round
            return Reply(answer="It is noon, probably.")
        return Reply(answer=_marker_call(body, "get_time", {}))

    k2emu.responder = respond
    client = k2_gateway().openai()
    kwargs: dict[str, Any] = {
        "model": MODEL, "messages": [{"role": "user", "content": "Time?"}], "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
    }
    reply = _complete(client, stream, kwargs)
    assert [c.function.name for c in reply.choices[0].message.tool_calls or []] == ["get_time"]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert "noon" not in (reply.choices[0].message.content or "")  # the discarded answer never reaches the client
    rounds = k2emu.requests_to("/api/chat/completions")
    assert len(rounds) == 2
    assert "must call the tool 'get_time'" in rounds[0].json["messages"][0]["content"]
    corrective = rounds[1].json["messages"]
    assert corrective[-2] == {"role": "assistant", "content": "It is noon, probably."}
    assert corrective[-1]["role"] == "user" and "'get_time'" in corrective[-1]["content"]


@pytest.mark.parametrize("parallel", [True, False])
def test_named_tool_choice_returns_only_the_named_call(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], parallel: bool) -> None:
    """The model calls another tool before the named one: the client gets the named call only, in one round."""
    tools = [*TOOLS, {"type": "function", "function": {"name": "get_time", "description": "The time", "parameters": {"type": "object", "properties": {}}}}]
    k2emu.responder = lambda body: Reply(answer=_marker_call(body, "get_time", {}) + "\n" + _marker_call(body, "get_weather", ARGS))
    reply = k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, parallel_tool_calls=parallel,
    )
    calls = reply.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("get_weather", ARGS)]  # type: ignore[union-attr]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert len(k2emu.requests_to("/api/chat/completions")) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_half_an_escaped_emoji_in_arguments_is_not_a_500(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    """The model writes `\\ud83d` (half a surrogate pair) in a string argument: the client gets U+FFFD in its place."""
    k2emu.responder = lambda body: Reply(answer=_marker_call(body, "get_weather", {}).replace("{}", r'{"city": "Paris \ud83d"}'))
    client = k2_gateway().openai()
    kwargs: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Weather?"}], "tools": TOOLS}
    if stream:
        chunks = [c for c in client.chat.completions.create(stream=True, **kwargs) if c.choices]
        arguments = "".join(t.function.arguments or "" for c in chunks for t in c.choices[0].delta.tool_calls or [] if t.function)
    else:
        arguments = client.chat.completions.create(**kwargs).choices[0].message.tool_calls[0].function.arguments  # type: ignore[index,union-attr]
    assert json.loads(arguments) == {"city": "Paris \ufffd"}


@pytest.mark.parametrize("stream", [False, True])
def test_an_empty_tool_calls_block_leaves_the_answer_in_order(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    """The model says "no call" with an empty `{"tool_calls": []}` fence, then answers: content is the answer, in order."""
    k2emu.responder = lambda body: Reply(answer='```json\n{"tool_calls": []}\n```\nParis is the capital of France.')
    client = k2_gateway().openai()
    kwargs: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], "tools": TOOLS}
    if stream:
        chunks = [c for c in client.chat.completions.create(stream=True, **kwargs) if c.choices]
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    else:
        reply = client.chat.completions.create(**kwargs)
        content, finish = reply.choices[0].message.content or "", [reply.choices[0].finish_reason]
    assert content.strip() == "Paris is the capital of France." and finish == ["stop"]


@pytest.mark.parametrize("stream", [False, True])
def test_several_objects_in_one_call_block_are_all_calls(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    """The model puts two calls in one marker block, one object per line: the client gets both, not just the first."""
    def respond(body: dict[str, Any]) -> Reply:
        token = _token(body)
        calls = "\n".join(json.dumps({"name": "get_weather", "arguments": {"city": city}}) for city in ("Paris", "Nice"))
        return Reply(answer=f"Checking both.\n<tool_call_{token}>\n{calls}\n</tool_call_{token}>")

    k2emu.responder = respond
    client = k2_gateway().openai()
    kwargs: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Paris and Nice?"}], "tools": TOOLS}
    reply = _complete(client, stream, kwargs)
    calls = reply.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Nice"}]  # type: ignore[union-attr]
    assert reply.choices[0].finish_reason == "tool_calls" and len(k2emu.requests_to("/api/chat/completions")) == 1


def test_repair_attempts_zero_returns_the_first_answer(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.responder = lambda body: Reply(answer=_marker_call(body, "get_weather", {"unit": "kelvin"}))
    reply = k2_gateway(tool_repair_attempts=0).openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS,  # type: ignore[arg-type]
    )
    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments) == {"unit": "kelvin"}  # type: ignore[index]
    assert len(k2emu.requests_to("/api/chat/completions")) == 1


def test_a_repair_round_shows_the_error_and_can_take_the_call_back(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        if len(body["messages"]) == 2:
            return Reply(answer=_marker_call(body, "get_forecast", {"city": "Paris"}))
        return Reply(answer="I have no forecast tool; the current weather tool is all I can offer.")

    k2emu.responder = respond
    reply = k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Forecast?"}], tools=TOOLS,  # type: ignore[arg-type]
    )
    assert not reply.choices[0].message.tool_calls and reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == "I have no forecast tool; the current weather tool is all I can offer."
    repair = k2emu.requests_to("/api/chat/completions")[1].json["messages"][-1]["content"]
    assert "there is no tool named 'get_forecast' (available tools: get_weather)" in repair


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_to_a_tool_never_offered_is_not_returned_even_after_the_repair(
    k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool
) -> None:
    """A model that insists on a tool the client does not have: the client gets its prose and no call it
    cannot run (the OpenAI Agents SDK raises on one), rather than a call to a missing function."""
    k2emu.responder = lambda body: Reply(answer="Checking the forecast.\n" + _marker_call(body, "get_forecast", {"city": "Paris"}))
    client = k2_gateway().openai()
    asked: Any = {"model": MODEL, "messages": [{"role": "user", "content": "Forecast?"}], "tools": TOOLS}
    if stream:
        chunks = list(client.chat.completions.create(**asked, stream=True))
        calls = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        reply = client.chat.completions.create(**asked)
        calls = reply.choices[0].message.tool_calls or []
        content, finish = reply.choices[0].message.content or "", [reply.choices[0].finish_reason]
    assert calls == [] and finish == ["stop"] and content.strip() == "Checking the forecast."
    assert len(k2emu.requests_to("/api/chat/completions")) == 2  # it was shown the error once


def test_toolify_disabled_still_delivers_tool_history(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "snow, -3C"},
    ]
    reply = k2_gateway(enable_toolify=False).openai().chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls
    sent = json.dumps(k2emu.last_request.json["messages"])  # type: ignore[union-attr]
    assert "snow, -3C" in sent and "call_9" in sent and "Oslo" in sent and "tool_call_" not in sent


@pytest.mark.parametrize("shape", SHAPES)
def test_every_k2think_reply_shape_carries_calls(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], shape: str) -> None:
    """Cumulative snapshots, delta chunks or one JSON body: the calls come out the same."""
    k2emu.responder = agent_model("marker")
    k2emu.shape, k2emu.awkward_splits, k2emu.stream_chunks = shape, True, 7
    client = k2_gateway().openai()
    with client.chat.completions.stream(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []] == [("get_weather", ARGS)]
    assert getattr(choice.message, "reasoning_content", None) == "I need the weather tool."
