"""`max_tokens` holds on upstreams that take no limit (K2Think's web chat, Kimi, Kiro), through the real SDKs.

The gateway ends the answer at the limit (`finish_reason: "length"`, Anthropic `max_tokens`),
reports no more output tokens than it delivered, and stops reading the upstream there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatbridge.core.usage import estimate_tokens
from tests.e2e.kiro_helpers import kiro_settings
from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, KimiEmulator, KimiReply, KiroEmulator, Reply
from tests.upstreams.kiro_frames import KiroReply

LONG = " ".join(f"word{i}" for i in range(400))
HI: list[Any] = [{"role": "user", "content": "Say a lot."}]
MODELS = {"k2think": "MBZUAI-IFM/K2-Think-v2", "kimi": "kimi", "kiro": "claude-sonnet-4-5-20250929"}


def answer_tokens(usage: Any) -> int:
    """Completion tokens less the reasoning's (which they include, as OpenAI counts them)."""
    details = usage.completion_tokens_details
    return int(usage.completion_tokens) - int(details.reasoning_tokens or 0 if details else 0)


@pytest.fixture(params=["k2think", "kimi", "kiro"])
def upstream(request: pytest.FixtureRequest, start_gateway: Callable[..., GatewayServer], tmp_path: Path,
             ) -> tuple[str, GatewayServer]:
    name: str = request.param
    if name == "k2think":
        k2emu: K2ThinkEmulator = request.getfixturevalue("k2emu")
        k2emu.reply = Reply(reasoning="Thinking. " * 30, answer=LONG)  # reasoning is not counted
        return name, start_gateway(k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token())
    if name == "kimi":
        kimi_emu: KimiEmulator = request.getfixturevalue("kimi_emu")
        kimi_emu.reply = KimiReply(text=LONG)
        return name, request.getfixturevalue("kimi_gateway")()
    kiro_emu: KiroEmulator = request.getfixturevalue("kiro_emu")
    kiro_emu.reply = KiroReply(text=LONG, pieces=40)
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", kiro_emu.add_account())
    return name, start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_ends_the_answer_there_with_length(upstream: tuple[str, GatewayServer], stream: bool) -> None:
    name, gateway = upstream
    client = gateway.openai()
    if stream:
        chunks = list(client.chat.completions.create(model=MODELS[name], messages=HI, max_tokens=12, stream=True,
                                                     stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        usage = chunks[-1].usage
    else:
        completion = client.chat.completions.create(model=MODELS[name], messages=HI, max_tokens=12)
        text = completion.choices[0].message.content or ""
        finish = [completion.choices[0].finish_reason]
        usage = completion.usage
    assert text and LONG.startswith(text) and len(text) < 60, text
    assert estimate_tokens(text) <= 12 and finish == ["length"]
    assert usage is not None and answer_tokens(usage) <= 12


def test_an_anthropic_client_gets_stop_reason_max_tokens(upstream: tuple[str, GatewayServer]) -> None:
    name, gateway = upstream
    client = gateway.anthropic()
    message = client.messages.create(model=MODELS[name], max_tokens=12, messages=HI)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens <= 12
    text = message.content[0].text  # type: ignore[union-attr]
    assert text and LONG.startswith(text) and len(text) < 60
    with client.messages.stream(model=MODELS[name], max_tokens=12, messages=HI) as events:
        final = events.get_final_message()
    assert final.stop_reason == "max_tokens" and final.content[0].text == text  # type: ignore[union-attr]


def test_a_room_for_the_whole_answer_leaves_it_whole(upstream: tuple[str, GatewayServer]) -> None:
    name, gateway = upstream
    completion = gateway.openai().chat.completions.create(model=MODELS[name], messages=HI, max_tokens=4000)
    assert (completion.choices[0].message.content or "").strip() == LONG and completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_the_upstream_is_not_read_past_the_limit(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer],
                                                 stream: bool) -> None:
    k2emu.shape = "delta_tags"
    k2emu.reply = Reply(reasoning="Thinking.", answer=LONG)
    k2emu.slow_stream(200, 0.05, keep_reply=True)  # an answer of about 10 s
    gateway = start_gateway(k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token())
    client = gateway.openai(timeout=10.0)
    if stream:
        chunks = list(client.chat.completions.create(model=MODELS["k2think"], messages=HI, max_tokens=5, stream=True))
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        finish = [client.chat.completions.create(model=MODELS["k2think"], messages=HI, max_tokens=5).choices[0].finish_reason]
    assert finish == ["length"]
    assert k2emu.wait_for_disconnect(5.0), "the gateway kept reading an answer past its limit"
    assert k2emu.completed_streams == 0


@pytest.mark.parametrize("stream", [False, True])
def test_the_limit_holds_where_tools_are_emulated_and_usage_is_still_reported(
        k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    k2emu.reply = Reply(reasoning="Thinking.", answer=LONG)
    gateway = start_gateway(k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token())
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    client = gateway.openai()
    if stream:
        chunks = list(client.chat.completions.create(model=MODELS["k2think"], messages=HI, max_tokens=12, tools=tools,
                                                     stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        usage = chunks[-1].usage
    else:
        completion = client.chat.completions.create(model=MODELS["k2think"], messages=HI, max_tokens=12, tools=tools)
        text, finish, usage = completion.choices[0].message.content or "", [completion.choices[0].finish_reason], completion.usage
    assert text and LONG.startswith(text) and finish == ["length"]
    assert usage is not None and 0 < answer_tokens(usage) <= 12 and usage.prompt_tokens > 0
