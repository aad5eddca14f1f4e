"""Answering clients that may leave: an SSE response and a disconnect watch.

uvicorn does not cancel a handler whose client has gone, and Starlette's `StreamingResponse`
never closes its body iterator, so without care an upstream request (minutes long, with a
reasoning model) would go on for nobody. `DisconnectWatch` cancels the request's task when
`http.disconnect` arrives; `EventStreamResponse` always closes its body, which closes the
upstream HTTP response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterable
from types import TracebackType

from starlette.types import Receive, Send

from chatbridge.core.errors import ClientDisconnected

log = logging.getLogger("chatbridge.api.streaming")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
]


class EventStreamResponse:
    """An SSE response; `headers` (raw, lower-case) are added to the SSE ones.

    With `keepalive`, those bytes are written whenever `interval` seconds pass without a chunk:
    one watchdog task per stream, which sleeps until the stream has been quiet long enough, and
    a lock so its writes never interleave with the body's.
    Run it inside a `DisconnectWatch`: the watch notices a client leaving, this closes the body.
    """

    def __init__(self, body: AsyncGenerator[bytes, None], headers: Iterable[tuple[bytes, bytes]] = (),
                 keepalive: bytes | None = None, interval: float = 10.0) -> None:
        self.body_iterator = body
        self.raw_headers = [*SSE_HEADERS, *headers]
        self.keepalive = keepalive
        self.interval = interval

    async def __call__(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            if self.keepalive is None:
                async for chunk in self.body_iterator:
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            else:
                await self._send_with_keepalive(send, self.keepalive)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self.body_iterator.aclose()

    async def _send_with_keepalive(self, send: Send, keepalive: bytes) -> None:
        loop = asyncio.get_running_loop()
        lock = asyncio.Lock()
        last = [loop.time()]
        done = [False]

        async def watchdog() -> None:
            while True:
                quiet = loop.time() - last[0]
                if quiet < self.interval:
                    await asyncio.sleep(self.interval - quiet)
                    continue
                async with lock:
                    if done[0]:
                        return
                    await send({"type": "http.response.body", "body": keepalive, "more_body": True})
                last[0] = loop.time()

        task = loop.create_task(watchdog())
        try:
            async for chunk in self.body_iterator:
                if chunk:
                    async with lock:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    last[0] = loop.time()
        finally:
            async with lock:  # never cancel it in the middle of a write
                done[0] = True
            task.cancel()


class DisconnectWatch:
    """`async with DisconnectWatch(receive)`: a client that leaves cancels the block, which
    then raises `ClientDisconnected`. Use only after the request body has been read.

    The watching task starts after `grace` seconds, so an answer faster than that (most
    non-streamed ones behind a fast upstream) costs a timer, not a task; a client that leaves
    sooner is noticed `grace` late.
    """

    __slots__ = ("_grace", "_receive", "_task", "_timer", "_watcher", "disconnected")

    def __init__(self, receive: Receive, grace: float = 0.05, task: asyncio.Task[object] | None = None) -> None:
        self._receive = receive
        self._grace = grace
        self._task = task  # the task to cancel; default: the one that enters the block
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.disconnected = False

    async def __aenter__(self) -> DisconnectWatch:
        task = self._task = self._task or asyncio.current_task()
        loop = task.get_loop() if task is not None else asyncio.get_running_loop()
        self._timer = loop.call_later(self._grace, self._start)
        return self

    def _start(self) -> None:
        self._timer = None
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                if self._task is not None:
                    self._task.cancel()
                return

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        if not self.disconnected:
            return False
        if self._task is not None:
            self._task.uncancel()
        log.info("client disconnected; upstream request cancelled")
        raise ClientDisconnected from None
