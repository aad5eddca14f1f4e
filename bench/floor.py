"""The library floor: what a gateway built on chatbridge's server and client libraries costs
before it does any work of its own.

    python -m bench.floor server --port N               uvicorn (uvloop, httptools) answering a
                                                        constant completion from a bare ASGI app
    python -m bench.floor client --url U --seconds S    aiohttp, set up exactly as chatbridge's
                                                        providers set it up, posting to U
    python -m bench.floor proxy --port N --upstream U   the minimal proxy: uvicorn + that aiohttp
                                                        client passing the request body to U and
                                                        the answer's bytes back as they arrive

A proxied request costs at least one of each, so their CPU per request, added, bounds the
throughput any gateway on these libraries can reach on one core. `bench.run` measures both in
the same run as the gateway and reports how far chatbridge is above that floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/floor.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ANSWER = json.dumps({
    "id": "chatcmpl-floor", "object": "chat.completion", "created": 0, "model": "fake-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
}).encode()
BODY = b'{"model":"fake-model","messages":[{"role":"user","content":"Hello there, how are you?"}]}'


async def constant_answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the request body, answers the same completion: the least an ASGI app can do."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]})
    await send({"type": "http.response.body", "body": ANSWER})


def serve(port: int, app: Any = constant_answer) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning")


def passthrough(upstream: str) -> Any:
    """An ASGI app that posts the request body to `upstream` and sends its answer back byte for
    byte, a part per upstream read: what any Python proxy on these libraries must do at least."""
    from chatbridge.providers.http import HttpSettings, create_session

    state: dict[str, Any] = {}
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-floor"}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                state["session"] = create_session(HttpSettings())
                await send({"type": "lifespan.startup.complete"})
            await state["session"].close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"floor proxy"})
            return
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        async with state["session"].post(upstream + scope["path"], data=b"".join(parts), headers=headers) as response:
            kind = response.headers.get("Content-Type", "application/json").encode()
            await send({"type": "http.response.start", "status": response.status, "headers": [(b"content-type", kind)]})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def post_for(url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    """Closed-loop POSTs through chatbridge's own session factory; CPU counted after a warm-up."""
    from chatbridge.providers.http import HttpSettings, create_session

    session = create_session(HttpSettings())
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-floor"}
    errors = 0

    async def worker(stop: float, counter: list[int]) -> None:
        nonlocal errors
        while time.monotonic() < stop:
            async with session.post(url, data=BODY, headers=headers) as response:
                await response.read()
                errors += response.status != 200
            counter[0] += 1

    try:
        warm: list[int] = [0]
        await asyncio.gather(*(worker(time.monotonic() + 1.0, warm) for _ in range(concurrency)))
        done: list[int] = [0]
        cpu, started = _cpu_seconds(), time.monotonic()
        await asyncio.gather(*(worker(started + seconds, done) for _ in range(concurrency)))
        cpu, elapsed = _cpu_seconds() - cpu, time.monotonic() - started
    finally:
        await session.close()
    return {"requests": done[0], "seconds": elapsed, "cpu_seconds": cpu, "errors": errors,
            "rps": done[0] / elapsed if elapsed else None,
            "cpu_ms_per_request": 1000 * cpu / done[0] if done[0] else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("server", help="uvicorn with a constant answer")
    server.add_argument("--port", type=int, required=True)
    client = sub.add_parser("client", help="aiohttp posting to --url; prints one JSON line")
    client.add_argument("--url", required=True)
    client.add_argument("--concurrency", type=int, default=64)
    client.add_argument("--seconds", type=float, default=5.0)
    proxy = sub.add_parser("proxy", help="the minimal proxy: uvicorn + aiohttp passing bytes to --upstream")
    proxy.add_argument("--port", type=int, required=True)
    proxy.add_argument("--upstream", required=True, help="the upstream's base URL (the request path is appended)")
    args = parser.parse_args(argv)
    if args.command == "server":
        serve(args.port)
        return 0
    if args.command == "proxy":
        serve(args.port, passthrough(args.upstream.rstrip("/")))
        return 0
    import uvloop

    result = uvloop.run(post_for(args.url, args.concurrency, args.seconds))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
