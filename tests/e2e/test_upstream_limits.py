"""An upstream that sends too much: an endless event, an endless or oversized body.

Each is a 502 naming the upstream and the setting (an in-band error once the answer has begun),
and the gateway stops reading at the limit: the emulator counts what it managed to write before
the gateway hung up, which stays near the limit however much the upstream would have sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator
from tests.upstreams.common import EmulatorBase

HI = [{"role": "user", "content": "hi"}]
LIMIT = 1 << 20  # 1 MiB
# What TCP buffers and aiohttp's read-ahead may hold beyond the limit when the gateway hangs up.
SLACK = 48 << 20


@pytest.fixture(params=["openai", "k2think"])
def upstream(request: pytest.FixtureRequest, compat_emu: OpenAICompatEmulator, k2emu: K2ThinkEmulator,
             start_gateway: Callable[..., GatewayServer]) -> tuple[EmulatorBase, GatewayServer, str, str]:
    """(emulator, gateway with 1 MiB limits, model, the upstream's name in messages)."""
    limits: dict[str, Any] = {"max_upstream_event_bytes": LIMIT, "max_upstream_body_bytes": LIMIT, "max_retries": 0}
    if request.param == "openai":
        gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                           k2think_enabled=False, **limits)
        return compat_emu, gw, "fake-model", "openai"
    gw = start_gateway(k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token(), **limits)
    return k2emu, gw, "MBZUAI-IFM/K2-Think-v2", "k2think"


def _post(gw: GatewayServer, model: str, stream: bool) -> httpx.Response:
    with gw.http() as http:
        return http.post("/v1/chat/completions", json={"model": model, "messages": HI, "stream": stream}, timeout=60)


def _error(response: httpx.Response) -> dict[str, Any]:
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert isinstance(error, dict)
    return error


def test_an_endless_event_is_a_502_and_reading_stops_at_the_limit(upstream: tuple[EmulatorBase, GatewayServer, str, str]) -> None:
    emu, gw, model, name = upstream
    emu.flood_next(b"data: {\"choices\":[{\"delta\":{\"content\":\"", b"x" * 65536, "text/event-stream")
    response = _post(gw, model, stream=True)
    assert response.status_code == 502, response.text[:300]
    message = _error(response)["message"]
    assert message.startswith(f"{name} upstream") and "MAX_UPSTREAM_EVENT_BYTES" in message and str(LIMIT) in message
    assert emu.wait_for_disconnect(10), "the gateway kept reading the endless event"
    assert emu.flooded_bytes < LIMIT + SLACK, emu.flooded_bytes


def test_an_endless_non_streamed_body_is_a_502_and_reading_stops_at_the_limit(
    upstream: tuple[EmulatorBase, GatewayServer, str, str],
) -> None:
    emu, gw, model, name = upstream
    emu.flood_next(b'{"choices":[{"message":{"content":"', b"x" * 65536, "application/json")
    response = _post(gw, model, stream=False)
    assert response.status_code == 502, response.text[:300]
    message = _error(response)["message"]
    assert message.startswith(f"{name} upstream") and "MAX_UPSTREAM_BODY_BYTES" in message and str(LIMIT) in message
    assert emu.wait_for_disconnect(10), "the gateway kept reading the endless body"
    assert emu.flooded_bytes < LIMIT + SLACK, emu.flooded_bytes


def test_a_body_declared_larger_than_the_limit_is_refused_unread(upstream: tuple[EmulatorBase, GatewayServer, str, str]) -> None:
    emu, gw, model, _ = upstream
    content = "y" * (2 * LIMIT)
    emu.fail_next(1, status=200, body=orjson.dumps({"choices": [{"message": {"content": content}}]}),
                  content_type="application/json")
    response = _post(gw, model, stream=False)
    assert response.status_code == 502
    assert "MAX_UPSTREAM_BODY_BYTES" in _error(response)["message"]


def test_an_oversized_event_after_the_answer_began_is_an_in_band_error(
    upstream: tuple[EmulatorBase, GatewayServer, str, str],
) -> None:
    emu, gw, model, name = upstream
    first = orjson.dumps({"choices": [{"delta": {"content": "Hello"}}]})
    emu.flood_next(b"data: " + first + b"\n\ndata: ", b"z" * 65536, "text/event-stream")
    response = _post(gw, model, stream=True)
    assert response.status_code == 200 and "[DONE]" not in response.text
    last = [e for e in response.text.split("\n\n") if e][-1]
    error = orjson.loads(last.removeprefix("data: "))["error"]
    assert error["message"].startswith(f"{name} upstream") and "MAX_UPSTREAM_EVENT_BYTES" in error["message"]
    assert emu.flooded_bytes < LIMIT + SLACK, emu.flooded_bytes


def test_events_and_bodies_within_the_limits_are_answered(upstream: tuple[EmulatorBase, GatewayServer, str, str]) -> None:
    emu, gw, model, _ = upstream
    text = "w" * (LIMIT // 2)
    emu.fail_next(1, status=200, body=b"data: " + orjson.dumps({"choices": [{"delta": {"content": text}}]})
                  + b"\n\ndata: [DONE]\n\n", content_type="text/event-stream")
    streamed = _post(gw, model, stream=True)
    assert streamed.status_code == 200 and text in streamed.text and "[DONE]" in streamed.text
    emu.fail_next(1, status=200, body=orjson.dumps({"choices": [{"message": {"content": text}}]}),
                  content_type="application/json")
    whole = _post(gw, model, stream=False)
    assert whole.status_code == 200 and text in whole.json()["choices"][0]["message"]["content"]
