"""Time, as a client sees it: REQUEST_TIMEOUT is one budget for the first content whatever the
attempts, a body that hangs after its headers is bounded, keep-alive comments are not content,
backoff is not overhead, and one key is never asked again after 401/403 or before Retry-After
(issue 10, points 8 and 9). Real openai SDK, real gateway, emulated upstreams."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator

HI = [{"role": "user", "content": "hi"}]
K2_MODEL = "MBZUAI-IFM/K2-Think-v2"


@pytest.fixture
def compat_gateway(compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> Callable[..., GatewayServer]:
    def start(**overrides: object) -> GatewayServer:
        values: dict[str, object] = {"openai_compat_base_url": compat_emu.base_url + "/v1", "k2think_enabled": False,
                                     "openai_compat_models": "fake-model"}
        values.update(overrides)
        return start_gateway(**values)

    return start


def test_a_hung_upstream_in_guest_mode_answers_504_within_one_request_timeout(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer],
) -> None:
    k2emu.delay_first_byte = 30
    gw = start_gateway(k2think_base_url=k2emu.base_url, request_timeout=1.0, max_retries=3)  # guest: no pool
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        gw.openai(timeout=20).chat.completions.create(model=K2_MODEL, messages=HI)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert caught.value.status_code == 504 and "REQUEST_TIMEOUT" in caught.value.message
    assert elapsed < 3.0  # was 4 × REQUEST_TIMEOUT plus backoff


def test_a_non_streamed_body_that_hangs_after_its_headers_is_bounded(
    compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer],
) -> None:
    compat_emu.split_writes, compat_emu.hang_mid_stream, compat_emu.interrupt_after_events = True, True, 0
    gw = compat_gateway(request_timeout=1.0, stream_idle_timeout=300)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        gw.openai(timeout=20).chat.completions.create(model="fake-model", messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code == 504
    assert time.monotonic() - started < 3.0  # not STREAM_IDLE_TIMEOUT per attempt


def test_keep_alive_comments_before_any_content_use_up_the_budget(
    compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer],
) -> None:
    compat_emu.keepalive_mid_stream, compat_emu.interrupt_after_events = True, 0
    gw = compat_gateway(request_timeout=1.0, stream_idle_timeout=300)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:  # nothing had been sent: a clean 504
        list(gw.openai(timeout=20).chat.completions.create(model="fake-model", messages=HI, stream=True))  # type: ignore[arg-type]
    assert caught.value.status_code == 504 and "keep-alive" in caught.value.message
    assert time.monotonic() - started < 3.0


def test_keep_alive_comments_mid_stream_are_silence_for_stream_idle_timeout(
    compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer],
) -> None:
    compat_emu.answer = "one two three four"
    compat_emu.keepalive_mid_stream, compat_emu.interrupt_after_events = True, 2  # the role chunk, one word
    gw = compat_gateway(request_timeout=5.0, stream_idle_timeout=1.0)
    started = time.monotonic()
    with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {gw.api_key}"}, timeout=20) as http:
        body = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": HI, "stream": True}).text
    assert time.monotonic() - started < 4.0  # the emulator would keep it alive for 30 s
    assert '"content":"one' in body  # the content before the silence reached the client
    assert "STREAM_IDLE_TIMEOUT" in body and "data: [DONE]" not in body  # then an in-band error


def test_a_429_is_retried_after_its_retry_after_and_the_wait_is_not_overhead(
    compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer],
) -> None:
    compat_emu.fail_next(1, 429, headers={"Retry-After": "1"})
    gw = compat_gateway(request_timeout=10.0)
    started = time.monotonic()
    with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {gw.api_key}"}, timeout=20) as http:
        response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": HI})
    assert response.status_code == 200 and time.monotonic() - started >= 1.0
    assert len(compat_emu.requests_to("/v1/chat/completions")) == 2
    assert float(response.headers["x-chatbridge-overhead-ms"]) < 500  # the second of waiting is not ours


@pytest.mark.parametrize("headers", [{"retry-after-ms": "600"}, {"x-ratelimit-reset-after": "0.6"}])
def test_the_other_spellings_of_retry_after_are_honoured_and_passed_on(
    headers: dict[str, str], compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer],
) -> None:
    compat_emu.fail_next(1, 429, headers=headers)  # Anthropic- and AWS-style servers say when in these
    gw = compat_gateway(request_timeout=10.0)
    started = time.monotonic()
    reply = gw.openai().chat.completions.create(model="fake-model", messages=HI)  # type: ignore[arg-type]
    assert reply.choices[0].message.content and time.monotonic() - started >= 0.6
    assert len(compat_emu.requests_to("/v1/chat/completions")) == 2  # waited, then asked again
    compat_emu.fail_next(4, 429, headers={"retry-after-ms": "9000"})
    with pytest.raises(openai.RateLimitError) as caught:
        gw.openai().chat.completions.create(model="fake-model", messages=HI)  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "9"


def test_a_429_that_does_not_fit_the_budget_is_answered_with_its_retry_after(
    compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer],
) -> None:
    compat_emu.fail_next(4, 429, headers={"Retry-After": "7"})
    gw = compat_gateway(request_timeout=2.0)
    with pytest.raises(openai.RateLimitError) as caught:
        gw.openai().chat.completions.create(model="fake-model", messages=HI)  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "7"
    assert len(compat_emu.requests_to("/v1/chat/completions")) == 1  # was 4 within 1.8 s


@pytest.mark.parametrize("code", [401, 403])
def test_an_upstream_refusing_the_key_is_asked_once(
    code: int, compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer],
) -> None:
    compat_emu.fail_next(4, code)
    gw = compat_gateway()
    with pytest.raises(openai.APIStatusError) as caught:
        gw.openai().chat.completions.create(model="fake-model", messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code == 502 and "refused" in caught.value.message
    assert len(compat_emu.requests_to("/v1/chat/completions")) == 1
