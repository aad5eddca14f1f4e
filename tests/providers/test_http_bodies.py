"""Whole (non-streamed) bodies over real HTTP: one that came with its headers, one still arriving.

A body that arrived with the headers is taken without a timer; one that is still arriving is
read under the first-content deadline. Both keep MAX_UPSTREAM_BODY_BYTES, and both give the
same events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from chatbridge.core.budget import FIRST_CONTENT_DEADLINE, clock
from chatbridge.core.errors import UpstreamProtocolError, UpstreamTimeout
from chatbridge.core.sse import SSEDecoder
from chatbridge.core.types import Finish, TextDelta, Usage
from chatbridge.providers.http import BodyLimits, UpstreamCall, stream_answer
from chatbridge.providers.openai_compat.protocol import CompletionReader

ANSWER = orjson.dumps({"choices": [{"message": {"content": "Hello there"}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 2}})


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def _head(chunked: bool, length: int) -> bytes:
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % length
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + framing + b"\r\n\r\n"


class OneShotServer:
    """Answers each request with `parts`, written `gap` seconds apart (one write: with the headers)."""

    def __init__(self, parts: list[bytes], gap: float = 0.0) -> None:
        self.parts = parts
        self.gap = gap
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            for index, part in enumerate(self.parts):
                if index:
                    await asyncio.sleep(self.gap)
                writer.write(part)
                await writer.drain()
            await reader.read()  # the connection stays open until the client closes it
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    async def __aenter__(self) -> OneShotServer:
        self._handlers: set[asyncio.Task[object]] = set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()


def _call(url: str, body_bytes: int = 1 << 20) -> UpstreamCall:
    return UpstreamCall("POST", url, {"Content-Type": "application/json"}, {"model": "m"}, provider="openai",
                        credential_id=None, idle_timeout=5.0, streamed=False, limits=BodyLimits(body_bytes=body_bytes))


async def _events(url: str, body_bytes: int = 1 << 20, deadline: float | None = None) -> list[object]:
    token = FIRST_CONTENT_DEADLINE.set(deadline)
    try:
        async with aiohttp.ClientSession() as session:
            answer: AsyncIterator[object] = stream_answer(session, _call(url, body_bytes), SSEDecoder, CompletionReader("openai"))
            return [event async for event in answer]
    finally:
        FIRST_CONTENT_DEADLINE.reset(token)


EXPECTED = [TextDelta("Hello there"), Usage(3, 2, estimated=False), Finish("stop", None)]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_that_came_with_its_headers_and_one_still_arriving_give_the_same_events(chunked: bool) -> None:
    whole = _head(chunked, len(ANSWER)) + (_chunked(ANSWER) if chunked else ANSWER)

    async def run() -> tuple[list[object], list[object]]:
        async with OneShotServer([whole]) as at_once:
            first = await _events(at_once.url)
        cut = len(whole) - 7
        async with OneShotServer([whole[:cut], whole[cut:]], gap=0.1) as dribbled:
            second = await _events(dribbled.url)
        return first, second

    at_once, dribbled = asyncio.run(run())
    assert at_once == EXPECTED
    assert dribbled == EXPECTED


def test_an_undeclared_body_over_the_limit_that_came_with_its_headers_is_refused() -> None:
    big = orjson.dumps({"choices": [{"message": {"content": "x" * 5000}}]})

    async def run() -> None:
        async with OneShotServer([_head(True, 0) + _chunked(big)]) as server:
            await _events(server.url, body_bytes=1000)

    with pytest.raises(UpstreamProtocolError, match="MAX_UPSTREAM_BODY_BYTES"):
        asyncio.run(run())


def test_a_body_still_arriving_is_bounded_by_the_first_content_deadline() -> None:
    whole = _head(False, len(ANSWER)) + ANSWER

    async def run() -> float:
        async with OneShotServer([whole[:-5], whole[-5:]], gap=3.0) as server:
            started = clock()
            with pytest.raises(UpstreamTimeout, match="REQUEST_TIMEOUT"):
                await _events(server.url, deadline=clock() + 0.3)
            return clock() - started

    assert asyncio.run(run()) < 2.0
