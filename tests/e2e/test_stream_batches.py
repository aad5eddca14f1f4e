"""A streamed answer leaves in one HTTP chunk per batch of events that were ready together.

uvicorn frames each ASGI `send` of a streamed body as one HTTP/1.1 chunk, so the chunks a
client reads off the socket show how the gateway sent: what the upstream delivered in one read
goes out in one piece, and what it delivered later is never held back for it.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable

import orjson
import pytest

from tests.harness import GatewayServer
from tests.upstreams import OpenAICompatEmulator

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


def _chunks(gw: GatewayServer, dialect: str) -> list[tuple[float, bytes]]:
    """The HTTP chunks of one streamed answer, each with the time it was read, off a raw socket."""
    body = orjson.dumps({"model": "fake-model", "stream": True, "max_tokens": 100,
                         "messages": [{"role": "user", "content": "hi"}]})
    request = (f"POST {PATHS[dialect]} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"
               f"authorization: Bearer {gw.api_key}\r\nx-api-key: {gw.api_key}\r\n"
               f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(request)
        reader = sock.makefile("rb")
        status = reader.readline()
        assert b" 200 " in status, status
        while reader.readline() not in (b"\r\n", b""):
            pass
        out: list[tuple[float, bytes]] = []
        while True:
            size = int(reader.readline().split(b";")[0], 16)
            data = reader.read(size)
            reader.readline()
            if size == 0:
                return out
            out.append((time.monotonic(), data))


def _texts(data: bytes) -> list[str]:
    """The pieces of answer text in one chunk's events, in either dialect."""
    out: list[str] = []
    for block in data.split(b"\n\n"):
        line = next((ln for ln in block.split(b"\n") if ln.startswith(b"data: ")), b"")
        if not line or line == b"data: [DONE]":
            continue
        payload = orjson.loads(line[len(b"data: "):])
        if payload.get("object") == "chat.completion.chunk" and payload["choices"]:
            text = payload["choices"][0]["delta"].get("content")
            if text:
                out.append(text)
        elif payload.get("type") == "content_block_delta" and payload["delta"]["type"] == "text_delta":
            out.append(payload["delta"]["text"])
    return out


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_what_one_upstream_read_gave_leaves_in_one_chunk(
    compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer], dialect: str,
) -> None:
    compat_emu.answer = " ".join(f"word{i}" for i in range(30))
    compat_emu.stream_chunks = 30
    compat_emu.split_writes, compat_emu.split_size = True, 1 << 20  # the whole answer in one write
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                       k2think_enabled=False)
    chunks = _chunks(gw, dialect)
    # The answer's events in one chunk, the stream's end (written when the upstream's body ended) in another.
    assert len(chunks) == 2, [c for _, c in chunks]
    content, end = chunks[0][1], chunks[1][1]
    assert len(_texts(content)) == 30 and "".join(_texts(content)) == compat_emu.answer
    assert end.endswith(b"data: [DONE]\n\n" if dialect == "openai" else b'data: {"type":"message_stop"}\n\n')


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_events_the_upstream_sent_apart_are_sent_at_once_each(
    compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer], dialect: str,
) -> None:
    compat_emu.answer = "one two three four"
    compat_emu.stream_chunks, compat_emu.chunk_delay = 4, 0.3
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                       k2think_enabled=False)
    chunks = _chunks(gw, dialect)
    pieces = [(t, _texts(c)) for t, c in chunks if _texts(c)]
    # Each piece in its own chunk, sent as it came: none waited for the next.
    assert [len(texts) for _, texts in pieces] == [1, 1, 1, 1], pieces
    assert "".join(texts[0] for _, texts in pieces) == compat_emu.answer
    times = [t for t, _ in pieces]
    assert all(later - earlier > 0.15 for earlier, later in itertools.pairwise(times)), times
