"""Kiro through the real gateway with the official `anthropic` SDK, as Claude Code uses it.

Text streamed and not, a tool loop the SDK can answer, signed thinking replayed (and a tampered
signature repaired), redacted thinking, a cut-off stream, and a Claude Code shaped request.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.e2e.kiro_helpers import credentials, kiro_settings
from tests.harness import GatewayServer
from tests.upstreams import KiroEmulator
from tests.upstreams.kiro_frames import KiroReply, sign

StartGateway = Callable[..., GatewayServer]
MODEL = "claude-sonnet-4-5-20250929"  # as Claude Code names it; Kiro's claude-sonnet-4.5
TOOLS: list[Any] = [{"name": "get_weather", "description": "Current weather for a city",
                     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
THINKING: Any = {"type": "enabled", "budget_tokens": 2048}


def current(body: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = body["conversationState"]["currentMessage"]["userInputMessage"]
    return message


def weather_loop(body: dict[str, Any]) -> KiroReply:
    """Think, call get_weather for Paris; once the result is back, think again and answer with it."""
    results = (current(body).get("userInputMessageContext") or {}).get("toolResults")
    if results:
        return KiroReply(text=f"It is {results[0]['content'][0]['text']} in Paris.", reasoning=["The tool answered."])
    return KiroReply(text="Let me check.", reasoning=["I need the weather tool."],
                     tool_calls=[{"name": "get_weather", "input": {"city": "Paris"}}])


@pytest.fixture
def gateway(kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path) -> GatewayServer:
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", kiro_emu.add_account())
    return start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))


def test_text_non_streamed_and_streamed(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.reply = KiroReply(text="Bonjour ! 春天", context_percent=3.0)
    client = gateway.anthropic()
    message = client.messages.create(model=MODEL, max_tokens=1000, messages=[{"role": "user", "content": "Salut"}])
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "Bonjour ! 春天"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.model == MODEL
    assert message.usage.input_tokens == 6000  # Kiro's context meter: 3 % of 200k
    with client.messages.stream(model=MODEL, max_tokens=1000, messages=[{"role": "user", "content": "Salut"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Bonjour ! 春天" and final.usage.input_tokens == 6000 and final.stop_reason == "end_turn"
    assert current(kiro_emu.chat_requests[0].json)["modelId"] == "claude-sonnet-4.5"


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_with_signed_thinking_replayed(gateway: GatewayServer, kiro_emu: KiroEmulator, stream: bool) -> None:
    kiro_emu.responder = weather_loop
    client = gateway.anthropic()
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with client.messages.stream(model=MODEL, max_tokens=2000, messages=messages, tools=TOOLS, thinking=THINKING) as events:
            first = events.get_final_message()
    else:
        first = client.messages.create(model=MODEL, max_tokens=2000, messages=messages, tools=TOOLS, thinking=THINKING)
    assert [b.type for b in first.content] == ["thinking", "text", "tool_use"] and first.stop_reason == "tool_use"
    thinking, _, call = first.content
    assert thinking.thinking == "I need the weather tool." and thinking.signature == sign("I need the weather tool.")  # type: ignore[union-attr]
    assert call.name == "get_weather" and call.input == {"city": "Paris"} and call.id.startswith("toolu_")  # type: ignore[union-attr]

    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}]  # type: ignore[union-attr]
    second = client.messages.create(model=MODEL, max_tokens=2000, messages=messages, tools=TOOLS, thinking=THINKING)
    assert [b.type for b in second.content] == ["thinking", "text"]
    assert second.content[1].text == "It is sunny in Paris." and second.stop_reason == "end_turn"  # type: ignore[union-attr]

    sent = kiro_emu.chat_requests[-1].json
    replayed = sent["conversationState"]["history"][1]["assistantResponseMessage"]
    assert replayed["reasoningContent"] == {"reasoningText": {"text": "I need the weather tool.",
                                                              "signature": sign("I need the weather tool.")}}
    assert replayed["toolUses"] == [{"toolUseId": call.id, "name": "get_weather", "input": {"city": "Paris"}}]  # type: ignore[union-attr]
    assert current(sent)["userInputMessageContext"]["toolResults"] == [
        {"toolUseId": call.id, "content": [{"text": "sunny"}], "status": "success"}]  # type: ignore[union-attr]
    assert kiro_emu.rejections == []


def test_a_tampered_signature_is_sent_again_without_the_historys_thinking(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.reply = KiroReply(text="Still here.")
    messages: list[Any] = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "my thoughts", "signature": sign("other thoughts")},
                                          {"type": "text", "text": "a"}]},
        {"role": "user", "content": "and?"},
    ]
    message = gateway.anthropic().messages.create(model=MODEL, max_tokens=500, messages=messages, thinking=THINKING)
    assert message.content[-1].text == "Still here."  # type: ignore[union-attr]
    first, second = kiro_emu.chat_requests
    assert "reasoningContent" in first.json["conversationState"]["history"][1]["assistantResponseMessage"]
    assert "reasoningContent" not in second.json["conversationState"]["history"][1]["assistantResponseMessage"]
    assert credentials(gateway)[0]["failures"] == 0 and "refused a thinking signature" in gateway.logs.text


def test_unsigned_thinking_is_never_forwarded(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "no signature", "signature": ""},
                                          {"type": "text", "text": "a"}]},
        {"role": "user", "content": "and?"},
    ]
    gateway.anthropic().messages.create(model=MODEL, max_tokens=500, messages=messages)
    [request] = kiro_emu.chat_requests
    assert "reasoningContent" not in request.json["conversationState"]["history"][1]["assistantResponseMessage"]


def test_separately_signed_and_redacted_thinking(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.reply = KiroReply(text="Done.", reasoning=["First thought.", "Second thought."], redacted="ZW5jcnlwdGVk")
    message = gateway.anthropic().messages.create(model=MODEL, max_tokens=500, thinking=THINKING,
                                                  messages=[{"role": "user", "content": "think"}])
    assert [b.type for b in message.content] == ["thinking", "thinking", "redacted_thinking", "text"]
    assert [b.signature for b in message.content[:2]] == [sign("First thought."), sign("Second thought.")]  # type: ignore[union-attr]
    assert message.content[2].data == "ZW5jcnlwdGVk"  # type: ignore[union-attr]


def test_thinking_not_asked_for_is_not_shown(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.reply = KiroReply(text="Answer.", reasoning=["Hidden."])
    message = gateway.anthropic().messages.create(model=MODEL, max_tokens=500, messages=[{"role": "user", "content": "x"}])
    assert [b.type for b in message.content] == ["text"]


def test_a_cut_off_stream_stops_with_max_tokens(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.reply, kiro_emu.truncate = KiroReply(text="The beginning of a long"), True
    with gateway.anthropic().messages.stream(model=MODEL, max_tokens=500, messages=[{"role": "user", "content": "x"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "max_tokens" and final.content[0].text == "The beginning of a long"  # type: ignore[union-attr]


def test_effort_from_output_config_and_from_a_thinking_budget(kiro_emu: KiroEmulator, start_gateway: StartGateway,
                                                               tmp_path: Path) -> None:
    kiro_emu.catalog_extra = [{"modelId": "claude-opus-4.6"}]
    kiro_emu.effort_models = {"claude-opus-4.6"}
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", kiro_emu.add_account())
    client = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path)).anthropic()
    hi: list[Any] = [{"role": "user", "content": "x"}]
    client.messages.create(model="claude-opus-4-6", max_tokens=500, messages=hi, extra_body={"output_config": {"effort": "max"}})
    with warnings.catch_warnings():  # the SDK recommends adaptive thinking for this model; the budget form is tested
        warnings.simplefilter("ignore")
        client.messages.create(model="claude-opus-4-6", max_tokens=18000, messages=hi,
                               thinking={"type": "enabled", "budget_tokens": 16000})
    client.messages.create(model="claude-opus-4-6", max_tokens=500, messages=hi, thinking={"type": "adaptive"})  # type: ignore[typeddict-item]
    client.messages.create(model=MODEL, max_tokens=500, messages=hi, extra_body={"output_config": {"effort": "high"}})
    fields = [r.json.get("additionalModelRequestFields") for r in kiro_emu.chat_requests]
    assert fields == [{"output_config": {"effort": "max"}}, {"output_config": {"effort": "medium"}}, None, None]
    assert kiro_emu.rejections == []


def test_a_claude_code_request(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    """System blocks, MCP-style schemas Kiro refuses as they are, cache_control, two user turns in a row."""
    kiro_emu.responder = weather_loop
    mcp_schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
                  "properties": {"city": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                                 "units": {"type": "string", "enum": ["c", "f"], "default": "c"}},
                  "required": ["city"]}
    client = gateway.anthropic(auth_token=gateway.api_key, api_key=None,
                               default_headers={"anthropic-beta": "interleaved-thinking-2025-05-14",
                                                "x-claude-code-session-id": "abc"})
    message = client.messages.create(
        model=MODEL, max_tokens=8000, stream=False,
        system=[{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
                {"type": "text", "text": "Be concise.", "cache_control": {"type": "ephemeral"}}],
        tools=[{"name": "get_weather", "description": "Weather", "input_schema": mcp_schema}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"}]},
                  {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?",
                                                "cache_control": {"type": "ephemeral"}}]}],
        metadata={"user_id": "user_abc_account__session_123"},
    )
    assert message.stop_reason == "tool_use" and kiro_emu.rejections == []
    [request] = kiro_emu.chat_requests
    schema = current(request.json)["userInputMessageContext"]["tools"][0]["toolSpecification"]["inputSchema"]["json"]
    assert "$schema" not in schema and schema["properties"]["city"] == {"type": "string"}
    assert current(request.json)["content"].startswith("You are Claude Code, Anthropic's official CLI for Claude.")
    assert current(request.json)["content"].endswith("<system-reminder>ctx</system-reminder>\n\nWeather in Paris?")


def test_a_tool_result_with_an_error_and_an_image(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    messages: list[Any] = [
        {"role": "user", "content": "Screenshot?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "is_error": True, "content": [
            {"type": "text", "text": "partly failed"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}]}]},
    ]
    gateway.anthropic().messages.create(model=MODEL, max_tokens=500, messages=messages, tools=TOOLS)
    sent = current(kiro_emu.chat_requests[0].json)
    assert sent["userInputMessageContext"]["toolResults"] == [
        {"toolUseId": "toolu_01", "content": [{"text": "partly failed"}], "status": "error"}]
    assert sent["images"] == [{"format": "png", "source": {"bytes": png}}] and kiro_emu.rejections == []


def test_too_long_is_an_anthropic_invalid_request(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.fail_next(1, 400, {"message": "Input is too long.", "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"})
    with pytest.raises(anthropic.BadRequestError) as caught:
        gateway.anthropic().messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "Input is too long" in caught.value.message


def test_a_connection_reset_after_text_stops_with_max_tokens(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.reply = KiroReply(text="The beginning of a long answer", pieces=3)
    kiro_emu.break_mid_stream, kiro_emu.interrupt_after_events = True, 2
    with gateway.anthropic().messages.stream(model=MODEL, max_tokens=500, messages=[{"role": "user", "content": "x"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "max_tokens" and final.content[0].text == "The beginning of a l"  # type: ignore[union-attr]
    message = gateway.anthropic().messages.create(model=MODEL, max_tokens=500, messages=[{"role": "user", "content": "x"}])
    assert message.stop_reason == "max_tokens"
