"""K2Think's less common answer variants, through the real `openai` and `anthropic` SDKs: events on
consecutive `data:` lines, `content` pieces instead of snapshots, thinking tags leaking into
`content` beside `reasoning_content`; and what reaches the upstream and what a refused guest sees."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, Reply

MODEL = "MBZUAI-IFM/K2-Think-v2"
REASONING = "The user greets me. I should greet back."
ANSWER = "Hello! How can I help you today?"
HI: list[Any] = [{"role": "user", "content": "hi"}]
Gateway = Callable[..., GatewayServer]


def _streamed(gw: GatewayServer) -> tuple[str, str]:
    chunks = list(gw.openai().chat.completions.create(model=MODEL, messages=HI, stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    return content, reasoning


def _non_streamed(gw: GatewayServer) -> tuple[str | None, str | None]:
    message = gw.openai().chat.completions.create(model=MODEL, messages=HI).choices[0].message
    return message.content, getattr(message, "reasoning_content", None)


def _anthropic(gw: GatewayServer) -> str:
    """The text of a streamed Anthropic answer (K2Think's unsigned reasoning is never a thinking block)."""
    with gw.anthropic().messages.stream(model=MODEL, max_tokens=2048, messages=HI) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text"]
    return "".join(b.text for b in final.content if b.type == "text")


# --- 1. one event per `data:` line, no blank line between events (notes §2.2) ----------------------


@pytest.mark.parametrize("shape", ["cumulative_details", "cumulative_think", "delta_tags", "delta_reasoning"])
@pytest.mark.parametrize("ending", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_events_on_consecutive_data_lines(k2emu: K2ThinkEmulator, k2_gateway: Gateway, shape: str, ending: str) -> None:
    k2emu.shape, k2emu.blank_lines, k2emu.line_ending = shape, False, ending
    k2emu.split_writes, k2emu.split_size = True, (1, 5, 2, 11)
    gw = k2_gateway()
    assert _streamed(gw) == (ANSWER, REASONING)
    assert _non_streamed(gw) == (ANSWER, REASONING)
    assert _anthropic(gw) == ANSWER


def test_events_on_consecutive_data_lines_stream_as_they_arrive(k2emu: K2ThinkEmulator, k2_gateway: Gateway) -> None:
    """The first lines reach the client while the upstream's stream is still open (no waiting for its end)."""
    k2emu.shape, k2emu.blank_lines = "delta_reasoning", False
    k2emu.hang_mid_stream, k2emu.interrupt_after_events, k2emu.hang_seconds = True, 3, 10
    gw = k2_gateway(stream_idle_timeout=8)
    started = time.monotonic()
    stream = gw.openai().chat.completions.create(model=MODEL, messages=HI, stream=True)
    try:
        for chunk in stream:
            if chunk.choices and getattr(chunk.choices[0].delta, "reasoning_content", None):
                break
    finally:
        stream.close()
    assert time.monotonic() - started < 5


# --- 2. `content` pieces rather than cumulative snapshots (notes §9.2, "concatenated") --------------


@pytest.mark.parametrize("shape", ["cumulative_think", "cumulative_think_duration", "cumulative_details", "cumulative_missing_open"])
@pytest.mark.parametrize("done_with_content", [True, False], ids=["done-carries-all", "done-alone"])
def test_content_pieces_are_read_as_deltas(k2emu: K2ThinkEmulator, k2_gateway: Gateway, shape: str,
                                           done_with_content: bool) -> None:
    k2emu.shape, k2emu.content_pieces, k2emu.done_with_content = shape, True, done_with_content
    k2emu.awkward_splits, k2emu.stream_chunks = True, 6
    gw = k2_gateway(guest=True)
    assert _streamed(gw) == (ANSWER, REASONING)
    assert _non_streamed(gw) == (ANSWER, REASONING)
    assert _anthropic(gw) == ANSWER


@pytest.mark.parametrize("chunks", [1, 2, 3, 8])
def test_content_pieces_of_a_short_answer(k2emu: K2ThinkEmulator, k2_gateway: Gateway, chunks: int) -> None:
    """The audit's answer, in 2 to 16 pieces (the first only the start of the reasoning)."""
    k2emu.shape, k2emu.content_pieces, k2emu.done_with_content = "cumulative_think", True, False
    k2emu.reply, k2emu.stream_chunks = Reply(raw_content="<think>The user says hi.</think>Hello there"), chunks
    assert _streamed(k2_gateway(guest=True)) == ("Hello there", "The user says hi.")


# --- 3. thinking tags leaking into `content` beside `reasoning_content` (notes, 2026 update) -------


@pytest.mark.parametrize("leak", ["close", "block"])
def test_leaked_thinking_tags_beside_native_reasoning(k2emu: K2ThinkEmulator, k2_gateway: Gateway, leak: str) -> None:
    k2emu.shape, k2emu.leak_think = "delta_reasoning", leak
    gw = k2_gateway()
    assert _streamed(gw) == (ANSWER, REASONING)
    assert _non_streamed(gw) == (ANSWER, REASONING)
    assert _anthropic(gw) == ANSWER


# --- 4. sampling parameters in `params` and at the top level (notes §1.4, §9.7) --------------------


@pytest.mark.parametrize("guest", [False, True], ids=["token", "guest"])
def test_sampling_parameters_are_sent_in_params_and_at_the_top_level(k2emu: K2ThinkEmulator, k2_gateway: Gateway,
                                                                      guest: bool) -> None:
    gw = k2_gateway(guest=guest)
    gw.openai().chat.completions.create(model=MODEL, messages=HI, temperature=0.3, max_tokens=77, top_p=0.9, stop=["END"])
    body = k2emu.chat_requests[-1].json
    sent = {"temperature": 0.3, "max_tokens": 77, "top_p": 0.9, "stop": ["END"]}
    assert body["params"] == sent
    assert {name: body[name] for name in sent} == sent
    gw.anthropic().messages.create(model=MODEL, max_tokens=50, messages=HI, extra_body={"temperature": 0.1, "top_k": 5})
    body = k2emu.chat_requests[-1].json
    assert body["params"] == {"temperature": 0.1, "max_tokens": 50, "top_k": 5}
    assert (body["temperature"], body["max_tokens"]) == (0.1, 50) and "top_k" not in body  # not an OpenAI field


def test_no_sampling_parameters_none_sent(k2emu: K2ThinkEmulator, k2_gateway: Gateway) -> None:
    k2_gateway().openai().chat.completions.create(model=MODEL, messages=HI)
    body = k2emu.chat_requests[-1].json
    assert body["params"] == {} and not {"temperature", "top_p", "stop", "max_tokens"} & set(body)


# --- 5. the guest endpoint refusing ---------------------------------------------------------------


def test_a_refused_guest_is_told_guest_access_was_refused(k2emu: K2ThinkEmulator, k2_gateway: Gateway) -> None:
    k2emu.fail_next(5, status=401)
    gw = k2_gateway(guest=True)
    with pytest.raises(openai.APIStatusError) as caught:
        gw.openai().chat.completions.create(model=MODEL, messages=HI)
    assert caught.value.status_code == 502
    message = caught.value.message
    assert "guest access was refused" in message and "K2THINK_TOKEN" in message and "ACCOUNTS_FILE" in message
    assert "credential was refused" not in message
    assert caught.value.code == "guest_access_refused"
    # Once more with what a guest handshake found (tests/e2e/test_k2think_guest_access.py), then no more.
    assert len(k2emu.chat_requests) == 2 and k2emu.guest_page_visits == 1

