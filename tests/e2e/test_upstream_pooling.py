"""Upstream connections are reused: a streamed answer gives its connection back to the pool.

The upstream's `[DONE]` often arrives a moment before the end of its chunked body (under load,
always in another read); a gateway that closed the response on `[DONE]` opened a new connection
(and paid its setup) for the next request. The emulator ends its bodies 20 ms after `[DONE]` to
show it every time, and the client waits 0.2 s between requests (the connection is released once
the body ends); only the emulator's view of the client's port can tell.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.harness import GatewayServer
from tests.upstreams import OpenAICompatEmulator

HI = [{"role": "user", "content": "hi"}]


def _gateway(emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    return start_gateway(openai_compat_base_url=emu.base_url + "/v1", openai_compat_models="fake-model",
                         k2think_enabled=False)


def _chat_peers(emu: OpenAICompatEmulator) -> list[tuple[str, int] | None]:
    return [r.peer for r in emu.requests_to("/v1/chat/completions")]


def test_sequential_streamed_answers_reuse_one_upstream_connection(
        compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.stream_chunks, compat_emu.end_delay = 20, 0.02
    gw = _gateway(compat_emu, start_gateway)
    client = gw.openai()
    for _ in range(6):
        text = "".join(chunk.choices[0].delta.content or "" for chunk in
                       client.chat.completions.create(model="fake-model", messages=HI, stream=True)  # type: ignore[arg-type]
                       if chunk.choices)
        assert text == compat_emu.answer
        time.sleep(0.2)
    peers = _chat_peers(compat_emu)
    assert len(peers) == 6 and None not in peers
    assert len(set(peers)) == 1, f"the gateway opened {len(set(peers))} upstream connections for 6 sequential streams"


def test_anthropic_streams_and_plain_answers_share_the_pooled_connection(
        compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.end_delay = 0.02
    gw = _gateway(compat_emu, start_gateway)
    with httpx.Client(base_url=gw.base_url, headers={"authorization": f"Bearer {gw.api_key}"}, timeout=30) as http:
        for n in range(6):
            if n % 2:
                with http.stream("POST", "/v1/messages", json={"model": "fake-model", "max_tokens": 50, "stream": True,
                                                               "messages": HI}) as response:
                    assert response.status_code == 200
                    assert b"message_stop" in b"".join(response.iter_bytes())
            else:
                response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": HI})
                assert response.status_code == 200
                assert response.json()["choices"][0]["message"]["content"] == compat_emu.answer
            time.sleep(0.2)
    peers = _chat_peers(compat_emu)
    assert len(peers) == 6 and len(set(peers)) == 1, f"{len(set(peers))} upstream connections for 6 sequential answers"



def test_an_upstream_slow_to_end_its_body_after_done_delays_nobody(
        compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    """The client's stream ends on `[DONE]`, not when the upstream gets round to ending its body;
    a body that does not end soon (RELEASE_GRACE) costs its connection, not the next request."""
    compat_emu.end_delay = 3.0
    gw = _gateway(compat_emu, start_gateway)
    for _ in range(2):
        started = time.monotonic()
        text = "".join(chunk.choices[0].delta.content or "" for chunk in
                       gw.openai().chat.completions.create(model="fake-model", messages=HI, stream=True)  # type: ignore[arg-type]
                       if chunk.choices)
        assert text == compat_emu.answer
        assert time.monotonic() - started < 1.0, "the answer waited for the end of the upstream's body"
    peers = _chat_peers(compat_emu)
    assert len(set(peers)) == 2, "a connection whose body had not ended was reused"
