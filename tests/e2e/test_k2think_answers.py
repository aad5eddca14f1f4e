"""K2Think through the official `openai` SDK: the answer in `content`, the thinking in
`reasoning_content`, streamed and not, for every upstream shape the protocol notes list."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, Reply

MODEL = "MBZUAI-IFM/K2-Think-v2"
REASONING = "The user greets me. I should greet back."
ANSWER = "Hello! How can I help you today?"
SHAPES = [
    "cumulative_details", "cumulative_think", "cumulative_think_duration", "cumulative_missing_open",
    "delta_tags", "delta_reasoning", "json", "json_missing_open",
]


def _stream(gw: GatewayServer, model: str = MODEL, **kwargs: object) -> tuple[str, str, list[object]]:
    chunks = list(gw.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True, **kwargs,  # type: ignore[arg-type]
    ))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    return content, reasoning, chunks


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("answer_tags", [False, True])
def test_every_shape_non_streamed(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], shape: str, answer_tags: bool) -> None:
    k2emu.shape, k2emu.answer_tags = shape, answer_tags
    gw = k2_gateway()
    reply = gw.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    message = reply.choices[0].message
    assert message.content == ANSWER
    assert message.reasoning_content == REASONING  # type: ignore[attr-defined]
    assert reply.choices[0].finish_reason == "stop"
    assert reply.id.startswith("chatcmpl-") and reply.model == MODEL and reply.object == "chat.completion"
    assert reply.usage is not None and reply.usage.total_tokens > 0


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_streamed_with_split_writes(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], shape: str) -> None:
    k2emu.shape, k2emu.split_writes, k2emu.split_size = shape, True, (1, 5, 2, 11)
    k2emu.awkward_splits = True
    gw = k2_gateway()
    content, reasoning, chunks = _stream(gw, stream_options={"include_usage": True})
    assert (content, reasoning) == (ANSWER, REASONING)
    assert chunks[0].choices[0].delta.role == "assistant"  # type: ignore[attr-defined]
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1  # type: ignore[attr-defined]
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]  # type: ignore[attr-defined]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]  # type: ignore[attr-defined]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0  # type: ignore[attr-defined]


def test_crlf_line_endings(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.shape, k2emu.line_ending = "cumulative_details", "\r\n"
    assert _stream(k2_gateway())[:2] == (ANSWER, REASONING)


def test_reasoning_streams_before_the_answer(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.shape = "delta_tags"
    _, _, chunks = _stream(k2_gateway())
    kinds = [("r" if getattr(c.choices[0].delta, "reasoning_content", None) else "c") for c in chunks[1:]
             if c.choices and (c.choices[0].delta.content or getattr(c.choices[0].delta, "reasoning_content", None))]
    assert kinds == sorted(kinds, key=lambda k: k != "r") and "r" in kinds and "c" in kinds


@pytest.mark.parametrize("model", ["MBZUAI-IFM/K2-Think-v2-nothink", "MBZUAI-IFM/K2-Think-nothink"])
def test_nothink_models_return_the_answer_only(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], model: str) -> None:
    gw = k2_gateway()
    reply = gw.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == ANSWER
    assert getattr(reply.choices[0].message, "reasoning_content", None) is None
    assert reply.model == model
    content, reasoning, _ = _stream(gw, model=model)
    assert (content, reasoning) == (ANSWER, "")
    assert k2emu.last_request is not None and k2emu.last_request.json["model"] == "MBZUAI-IFM/K2-Think-v2"


def test_output_thinking_false(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(output_thinking=False)
    assert _stream(gw)[:2] == (ANSWER, "")


def test_thinking_format_tags(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(thinking_format="tags")
    content, reasoning, _ = _stream(gw)
    assert content == f"<think>{REASONING}</think>\n{ANSWER}" and reasoning == ""


def test_alias_model_is_served(k2_gateway: Callable[..., GatewayServer]) -> None:
    reply = k2_gateway().openai().chat.completions.create(model="MBZUAI-IFM/K2-Think", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == ANSWER and reply.model == "MBZUAI-IFM/K2-Think"


def test_usage_is_estimated_when_upstream_sends_none(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.shape, k2emu.send_usage = "cumulative_think", False
    reply = k2_gateway().openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.usage.model_extra.get("estimated") is True  # type: ignore[union-attr]


def test_upstream_usage_is_passed_on(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.reply = Reply(reasoning="r", answer="a", usage={"prompt_tokens": 431, "completion_tokens": 69, "total_tokens": 500})
    reply = k2_gateway().openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (431, 69, 500)  # type: ignore[union-attr]


def test_unicode_answer(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.reply = Reply(reasoning="考虑一下 🤔", answer="你好！👋 Grüße")
    k2emu.split_writes, k2emu.split_size = True, 3
    assert _stream(k2_gateway())[:2] == ("你好！👋 Grüße", "考虑一下 🤔")


def _non_streamed(gw: GatewayServer, model: str = MODEL) -> tuple[str | None, str | None]:
    message = gw.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]).choices[0].message
    return message.content, getattr(message, "reasoning_content", None)


@pytest.mark.parametrize("shape", SHAPES)
def test_answer_only_and_inline_tags_for_every_shape(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], shape: str) -> None:
    """`-nothink`, OUTPUT_THINKING=false and THINKING_FORMAT=tags, streamed and not, whatever the upstream sends."""
    k2emu.shape = shape
    plain, tags = k2_gateway(), k2_gateway(thinking_format="tags")
    hidden = k2_gateway(output_thinking=False)
    for gw, model in ((plain, "MBZUAI-IFM/K2-Think-v2-nothink"), (hidden, MODEL), (tags, "MBZUAI-IFM/K2-Think-v2-nothink")):
        assert _non_streamed(gw, model) == (ANSWER, None)
        assert _stream(gw, model)[:2] == (ANSWER, "")
    inline = f"<think>{REASONING}</think>\n{ANSWER}"
    assert _non_streamed(tags) == (inline, None)
    assert _stream(tags)[:2] == (inline, "")
