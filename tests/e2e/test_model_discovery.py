"""The OpenAI-compatible upstream's model list: read in the background, retried while the upstream
is down, refreshed, and its state in /health (issue 10, point 13)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.harness import GatewayServer, free_port
from tests.pool.helpers import wait_for
from tests.upstreams import OpenAICompatEmulator

HI = [{"role": "user", "content": "hi"}]


def health(gw: GatewayServer) -> dict[str, Any]:
    response = httpx.get(gw.base_url + "/health", timeout=5)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def silent_upstream() -> Iterator[str]:
    """A port that accepts connections and never answers (a listening socket nobody serves)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def test_an_upstream_down_at_start_is_discovered_once_it_is_up(start_gateway: Callable[..., GatewayServer]) -> None:
    port = free_port()
    gw = start_gateway(k2think_enabled=False, openai_compat_base_url=f"http://127.0.0.1:{port}/v1")
    state = health(gw)
    assert state["status"] == "degraded"
    openai_state = state["providers"]["openai"]
    assert openai_state["models"] == [] and openai_state["discovery"].startswith("failed: ")
    with pytest.raises(openai.NotFoundError) as caught:
        gw.openai().chat.completions.create(model="llama3", messages=HI)  # type: ignore[arg-type]
    assert "not read from their upstream yet: openai (failed)" in caught.value.message

    upstream = OpenAICompatEmulator(port=port)
    upstream.models = ["llama3"]
    with upstream:  # the upstream comes up: found without a restart
        wait_for(lambda: [m.id for m in gw.openai().models.list()] == ["llama3"], timeout=15)
        reply = gw.openai().chat.completions.create(model="llama3", messages=HI)  # type: ignore[arg-type]
        assert reply.choices[0].message.content
        state = health(gw)
        assert state["status"] == "ok" and state["providers"]["openai"]["discovery"] == "ok"


def test_an_upstream_that_never_answers_delays_neither_start_nor_health(
    silent_upstream: str, start_gateway: Callable[..., GatewayServer],
) -> None:
    started = time.monotonic()
    gw = start_gateway(k2think_enabled=False, openai_compat_base_url=silent_upstream, request_timeout=20)
    state = health(gw)
    assert time.monotonic() - started < 5  # was REQUEST_TIMEOUT and more
    assert state["status"] == "degraded" and state["providers"]["openai"]["discovery"] == "pending"


def test_the_model_list_is_refreshed_and_routes_follow(
    compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer],
) -> None:
    compat_emu.models = ["first"]
    gw = start_gateway(k2think_enabled=False, openai_compat_base_url=compat_emu.base_url + "/v1",
                       openai_compat_models_refresh=0.2)
    assert [m.id for m in gw.openai().models.list()] == ["first"]  # a healthy upstream is read at start
    compat_emu.models = ["first", "second"]
    wait_for(lambda: [m.id for m in gw.openai().models.list()] == ["first", "second"], timeout=15)
    assert gw.openai().chat.completions.create(model="second", messages=HI).choices[0].message.content  # type: ignore[arg-type]
