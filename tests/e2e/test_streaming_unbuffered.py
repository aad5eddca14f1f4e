"""Streams are passed on as they arrive: the first token reaches the client long before the last.

A gateway that buffered (a whole upstream body, or a whole snapshot sequence) would still give
the right text, so only timing on a real loopback server can tell.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator

HI = [{"role": "user", "content": "hi"}]


def _first_and_last(gw: GatewayServer, model: str) -> tuple[float, float, str]:
    started = time.monotonic()
    first: float | None = None
    text: list[str] = []
    for chunk in gw.openai().chat.completions.create(model=model, messages=HI, stream=True):  # type: ignore[arg-type]
        delta = chunk.choices[0].delta if chunk.choices else None
        piece = (delta.content or getattr(delta, "reasoning_content", None) or "") if delta else ""
        if piece and first is None:
            first = time.monotonic() - started
        text.append(piece)
    assert first is not None, "no text arrived"
    return first, time.monotonic() - started, "".join(text)


def test_openai_compat_streams_without_buffering(compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.answer = " ".join(f"word{i}" for i in range(40))
    compat_emu.stream_chunks, compat_emu.chunk_delay = 10, 0.12  # about 1.2 s from first to last chunk
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model", k2think_enabled=False)
    first, total, text = _first_and_last(gw, "fake-model")
    assert text == compat_emu.answer
    assert total - first > 0.8, f"first token after {first:.2f} s of {total:.2f} s: the stream was held back"


@pytest.mark.parametrize("shape", ["delta_tags", "cumulative_details"])
def test_k2think_streams_without_buffering(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], shape: str) -> None:
    k2emu.shape = shape
    k2emu.slow_stream(6, 0.1)  # about 1.2 s of reasoning and answer
    first, total, _ = _first_and_last(k2_gateway(), "MBZUAI-IFM/K2-Think-v2")
    assert total - first > 0.8, f"first token after {first:.2f} s of {total:.2f} s: the stream was held back"
