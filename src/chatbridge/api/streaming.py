"""An SSE response that notices a client leaving and closes the upstream at once.

Starlette's `StreamingResponse` cancels its body task on disconnect but never closes the body
iterator, so the upstream request would linger until garbage collection. This response runs
the body in the request task, watches `receive` for `http.disconnect`, and on disconnect
cancels the body and awaits its `aclose()`, which closes the upstream HTTP response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger("chatbridge.api.streaming")

SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # nginx: do not buffer the stream
}


class EventStreamResponse(Response):
    def __init__(self, body: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.body_iterator = body
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        streamer = asyncio.current_task()
        disconnected = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, disconnected, streamer))
        try:
            async for chunk in self.body_iterator:
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise
            log.info("client disconnected; upstream request cancelled")
        finally:
            watcher.cancel()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


async def _watch_disconnect(receive: Receive, disconnected: asyncio.Event, streamer: asyncio.Task[object] | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            if streamer is not None:
                streamer.cancel()
            return
