"""Kimi through the Anthropic Messages API, as the `anthropic` SDK sees it: thinking, streaming,
sessions keyed by `metadata.user_id`, emulated tools and images."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from tests.harness import GatewayServer
from tests.upstreams import KimiEmulator, KimiReply

Start = Callable[..., GatewayServer]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()
WEATHER = {"name": "get_weather", "description": "Current weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_kimis_unsigned_thinking_is_never_forged_into_a_thinking_block(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    """Kimi signs nothing: an Anthropic client gets the answer without a thinking block (wire-formats B2:
    never forge a signature); OpenAI clients still get the reasoning in `reasoning_content`."""
    kimi_emu.reply = KimiReply(text="你好！我是 Kimi。", thinking="用户在打招呼。")
    gateway = kimi_gateway()
    client = gateway.anthropic()
    plain = client.messages.create(model="kimi-thinking", max_tokens=512, messages=[{"role": "user", "content": "你好"}])
    assert [block.type for block in plain.content] == ["text"]
    message = client.messages.create(model="kimi-thinking", max_tokens=2048, messages=[{"role": "user", "content": "你好"}],
                                     thinking={"type": "enabled", "budget_tokens": 1024})
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "你好！我是 Kimi。"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    reply = gateway.openai().chat.completions.create(model="kimi-thinking", messages=[{"role": "user", "content": "你好"}])
    assert reply.choices[0].message.reasoning_content == "用户在打招呼。"  # type: ignore[attr-defined]


def test_a_stream_accumulates_in_the_sdk_to_the_answer(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.reply = KimiReply(text="第一段。第二段。第三段。", thinking="想一想。")
    with kimi_gateway().anthropic().messages.stream(
            model="kimi-thinking", max_tokens=2048, messages=[{"role": "user", "content": "讲三段"}],
            thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "第一段。第二段。第三段。"
    assert [block.type for block in final.content] == ["text"] and final.stop_reason == "end_turn"


def test_metadata_user_id_keeps_one_kimi_chat_across_turns(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    client = kimi_gateway().anthropic()
    history: list[dict[str, Any]] = [{"role": "user", "content": "我叫张三，来自北京"}]
    first = client.messages.create(model="kimi", max_tokens=256, messages=history, metadata={"user_id": "zhang_san_001"})
    history += [{"role": "assistant", "content": first.content[0].text},  # type: ignore[union-attr]
                {"role": "user", "content": "我刚才说我来自哪里？"}]
    client.messages.create(model="kimi", max_tokens=256, messages=history, metadata={"user_id": "zhang_san_001"})
    one, two = kimi_emu.chat_calls
    assert one.new_chat and not two.new_chat and two.chat_id == one.chat_id
    assert two.text == "我刚才说我来自哪里？"  # only the new turn went upstream


def test_an_emulated_tool_call_comes_back_as_a_tool_use_block(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    def respond(call: Any, history: Any) -> str:
        tag = call.text.split("<tool_call_", 1)[1].split(">", 1)[0]
        return f"<tool_call_{tag}>\n{json.dumps({'name': 'get_weather', 'arguments': {'city': 'Paris'}})}\n</tool_call_{tag}>"

    kimi_emu.respond = respond
    message = kimi_gateway().anthropic().messages.create(
        model="kimi", max_tokens=256, tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Paris?"}])
    [use] = [block for block in message.content if block.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"


def test_a_base64_image_block_is_uploaded_to_kimi(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_gateway().anthropic().messages.create(model="kimi", max_tokens=256, messages=[{"role": "user", "content": [
        {"type": "text", "text": "这是什么？"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}])
    [call] = kimi_emu.chat_calls
    assert len(call.files) == 1 and kimi_emu.uploads == [base64.b64decode(PNG)]
    assert call.text == "这是什么？\n[image 1]"
