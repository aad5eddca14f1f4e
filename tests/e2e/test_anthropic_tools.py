"""Tool use through the Anthropic Messages API: a two-round loop (tool_use → tool_result → answer),
streamed and not, over K2Think (emulated tools) and an OpenAI-compatible upstream (native tools)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import anthropic
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator, Reply

K2 = "MBZUAI-IFM/K2-Think-v2"
TOOLS: list[Any] = [
    {"name": "get_weather", "description": "Current weather for a city", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "get_time", "description": "Local time in a city", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
]
QUESTION: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]


def k2_model(tool: str = "get_weather") -> Callable[[dict[str, Any]], Reply]:
    """K2Think as a model that follows the tool prompt: calls `tool`, then answers from its result."""

    def respond(body: dict[str, Any]) -> Reply:
        last = str(body["messages"][-1]["content"])
        result = re.search(r"<tool_result_[a-z0-9]+ [^>]*>\s*(.*?)\s*</tool_result", last, re.S)
        if result:
            return Reply(reasoning="I have it.", answer=f"It is {result.group(1)} in Paris.")
        system = "\n".join(str(m["content"]) for m in body["messages"] if m["role"] == "system")
        token = re.search(r"<tool_call_([a-z0-9]+)>", system)
        assert token, "the tool prompt did not reach the upstream"
        call = json.dumps({"name": tool, "arguments": {"city": "Paris"}})
        return Reply(reasoning="I need the tool.",
                     answer=f"Let me check.\n<tool_call_{token.group(1)}>\n{call}\n</tool_call_{token.group(1)}>")

    return respond


def compat_model(tool: str = "get_weather") -> Callable[[dict[str, Any]], Reply]:
    """An OpenAI-compatible model with native tools: a call, then an answer from the tool message."""

    def respond(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]
        if last["role"] == "tool":
            return Reply(answer=f"It is {last['content']} in Paris.")
        return Reply(answer="", tool_calls=[{"name": tool, "arguments": {"city": "Paris"}, "id": "call_abc123"}])

    return respond


@pytest.fixture
def gateway(request: pytest.FixtureRequest, k2emu: K2ThinkEmulator, compat_emu: OpenAICompatEmulator,
            start_gateway: Callable[..., GatewayServer]) -> tuple[GatewayServer, str, Any]:
    """(gateway, model, emulator) for the parametrised upstream."""
    if request.param == "k2think":
        k2emu.responder = k2_model()
        return start_gateway(k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token()), K2, k2emu
    compat_emu.responder = compat_model()
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                       k2think_enabled=False)
    return gw, "fake-model", compat_emu


def _ask(client: anthropic.Anthropic, model: str, messages: list[Any], stream: bool, **kwargs: Any) -> Any:
    if stream:
        with client.messages.stream(model=model, max_tokens=1024, messages=messages, tools=TOOLS, **kwargs) as s:
            return s.get_final_message()
    return client.messages.create(model=model, max_tokens=1024, messages=messages, tools=TOOLS, **kwargs)


@pytest.mark.parametrize("gateway", ["k2think", "openai"], indirect=True)
@pytest.mark.parametrize("stream", [False, True])
def test_two_round_tool_loop(gateway: tuple[GatewayServer, str, Any], stream: bool) -> None:
    gw, model, emulator = gateway
    client = gw.anthropic()
    first = _ask(client, model, QUESTION, stream)
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert re.fullmatch(r"toolu_[A-Za-z0-9]+", use.id) and use.name == "get_weather" and use.input == {"city": "Paris"}
    assert first.content[-1].type == "tool_use"
    history = [*QUESTION, {"role": "assistant", "content": first.content},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "15 C"}]}]
    final = _ask(client, model, history, stream)
    assert final.stop_reason == "end_turn"
    assert [b.type for b in final.content] == ["text"] and final.content[0].text == "It is 15 C in Paris."
    sent = emulator.last_request.json
    if emulator is not None and model == "fake-model":  # native tools: the history as OpenAI messages
        assistant, tool = sent["messages"][-2], sent["messages"][-1]
        assert assistant["tool_calls"][0]["id"] == use.id and tool == {"role": "tool", "content": "15 C",
                                                                        "tool_call_id": use.id}
        assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_streamed_tool_use_events(compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.responder = compat_model()
    compat_emu.split_writes, compat_emu.split_size = True, 5
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                       k2think_enabled=False)
    with gw.anthropic().messages.stream(model="fake-model", max_tokens=256, messages=QUESTION, tools=TOOLS) as s:
        events = list(s)
    starts = [e for e in events if e.type == "content_block_start"]
    assert [e.content_block.type for e in starts] == ["tool_use"] and starts[0].index == 0
    assert starts[0].content_block.input == {}
    parts = [e.delta.partial_json for e in events if e.type == "content_block_delta"]
    assert json.loads("".join(parts)) == {"city": "Paris"} and len(parts) > 1


@pytest.mark.parametrize("gateway", ["k2think", "openai"], indirect=True)
def test_tool_choice_any_and_tool(gateway: tuple[GatewayServer, str, Any]) -> None:
    gw, model, emulator = gateway
    emulator.responder = k2_model("get_time") if model == K2 else compat_model("get_time")
    client = gw.anthropic()
    forced = _ask(client, model, QUESTION, False, tool_choice={"type": "tool", "name": "get_time"})
    assert [b.name for b in forced.content if b.type == "tool_use"] == ["get_time"]
    anyone = _ask(client, model, QUESTION, True, tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert anyone.stop_reason == "tool_use"
    if model == "fake-model":
        sent = emulator.last_request.json
        assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
        _ask(client, model, QUESTION, False, tool_choice={"type": "tool", "name": "get_time"})
        assert emulator.last_request.json["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}


def test_tool_choice_none_and_tool_errors(compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                       k2think_enabled=False)
    client = gw.anthropic()
    message = _ask(client, "fake-model", QUESTION, False, tool_choice={"type": "none"})
    assert message.content[0].type == "text" and compat_emu.last_request.json["tool_choice"] == "none"
    with pytest.raises(anthropic.BadRequestError) as unknown:
        _ask(client, "fake-model", QUESTION, False, tool_choice={"type": "tool", "name": "nope"})
    assert "nope" in unknown.value.message
    with pytest.raises(anthropic.BadRequestError) as server_tool:
        client.messages.create(model="fake-model", max_tokens=64, messages=QUESTION,
                               tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "web_search_20250305" in server_tool.value.message and "server tool" in server_tool.value.message


def test_tool_result_blocks_errors_and_images(compat_emu: OpenAICompatEmulator,
                                              start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                       k2think_enabled=False)
    gw.anthropic().messages.create(model="fake-model", max_tokens=64, tools=TOOLS, messages=[
        *QUESTION,
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "text", "text": "map:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "clock broke", "is_error": True},
            {"type": "text", "text": "Thanks."}]},
    ])
    sent = compat_emu.last_request.json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user", "tool", "user"]
    assert sent[2] == {"role": "tool", "content": [{"type": "text", "text": "map:"}], "tool_call_id": "toolu_1"}
    assert sent[3]["content"][1]["image_url"]["url"] == "data:image/png;base64,iVBORw0KGgo="
    assert sent[4] == {"role": "tool", "content": "Error: clock broke", "tool_call_id": "toolu_2"}
    assert sent[5] == {"role": "user", "content": "Thanks."}
    assert json.loads(sent[1]["tool_calls"][1]["function"]["arguments"]) == {"city": "Paris"}


@pytest.mark.parametrize("stream", [False, True])
def test_half_an_escaped_emoji_keeps_the_tool_input(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer],
                                                     stream: bool) -> None:
    """The model writes `\\ud83d` (half a surrogate pair) in an argument: the input survives, with U+FFFD for it."""

    def respond(body: dict[str, Any]) -> Reply:
        system = "\n".join(str(m["content"]) for m in body["messages"] if m["role"] == "system")
        token = re.search(r"<tool_call_([a-z0-9]+)>", system)
        assert token
        call = r'{"name": "get_weather", "arguments": {"city": "Paris \ud83d"}}'
        return Reply(answer=f"<tool_call_{token.group(1)}>\n{call}\n</tool_call_{token.group(1)}>")

    k2emu.responder = respond
    gw = start_gateway(k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token())
    reply = _ask(gw.anthropic(), K2, QUESTION, stream)
    (use,) = [b for b in reply.content if b.type == "tool_use"]
    assert reply.stop_reason == "tool_use" and use.input == {"city": "Paris \ufffd"}
