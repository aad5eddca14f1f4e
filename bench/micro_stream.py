"""Micro-benchmark of the streaming hot path: `providers.http.stream_answer` over a fake response.

No network and no server: a fake session hands out responses whose body is a pre-encoded
OpenAI chunk stream, so what is timed is the skeleton itself (open, decode, read, deadline
and idle checks) plus the SSE decoder and the OpenAI reader. Run it before and after a change
to the skeleton: `python -m bench.micro_stream [--streams N] [--chunks N] [--repeat N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from chatbridge.core.sse import SSEDecoder
from chatbridge.providers.http import UpstreamCall, stream_answer
from chatbridge.providers.openai_compat.protocol import CompletionReader


def sse_body(chunks: int) -> list[bytes]:
    """One OpenAI stream, one network chunk per event, as a fast upstream sends it."""
    head = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    events = [
        orjson.dumps({**head, "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]})
        for i in range(chunks)
    ]
    events.append(orjson.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    return [b"data: " + e + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


class _Content:
    def __init__(self, body: list[bytes]) -> None:
        self._body = body

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self._body:
            yield chunk

    def is_eof(self) -> bool:
        return True


class FakeResponse:
    status = 200
    connection = None

    def __init__(self, body: list[bytes]) -> None:
        self.headers = {"Content-Type": "text/event-stream; charset=utf-8"}
        self.content = _Content(body)
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def release(self) -> None:
        self.closed = True


class FakeSession:
    def __init__(self, body: list[bytes]) -> None:
        self._body = body

    async def request(self, method: str, url: str, **kwargs: Any) -> FakeResponse:
        return FakeResponse(self._body)


async def run(streams: int, chunks: int, budget: bool) -> float:
    """CPU seconds for `streams` streams of `chunks` content chunks each, read to the end.

    CPU time of this process, not wall time: the machine is shared, and nothing here waits.
    """
    session = FakeSession(sse_body(chunks))
    if budget:  # as the pipeline sets it (REQUEST_TIMEOUT); absent before the budget existed
        from chatbridge.core.budget import FIRST_CONTENT_DEADLINE

        FIRST_CONTENT_DEADLINE.set(time.monotonic() + 3600)
    started = time.process_time()
    for _ in range(streams):
        call = UpstreamCall("POST", "http://upstream/v1/chat/completions", {}, {"model": "m"},
                            provider="openai", credential_id=None, idle_timeout=300.0)
        async for _event in stream_answer(session, call, SSEDecoder, CompletionReader("openai")):  # type: ignore[arg-type]
            pass
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-budget", action="store_true", help="no first-content deadline (older code)")
    args = parser.parse_args()
    times = [asyncio.run(run(args.streams, args.chunks, not args.no_budget)) for _ in range(args.repeat)]
    events = args.streams * (args.chunks + 2)
    best, median = min(times), statistics.median(times)
    print(f"{args.streams} streams x {args.chunks} chunks: best {best * 1e6 / events:.2f} µs/event, "
          f"median {median * 1e6 / events:.2f} µs/event ({best:.3f} s best of {args.repeat})")


if __name__ == "__main__":
    main()
