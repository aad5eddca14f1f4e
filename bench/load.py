"""Load generation: `wrk` when installed (C, cheap per request), else a Python aiohttp client.

Closed-loop load: `concurrency` connections each send the next request as soon as the previous
answer is complete. Latency percentiles are per request. Streams, the overhead header and the
memory test use the aiohttp client, which reads every response byte by byte as it arrives.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp


@dataclass(slots=True)
class LoadResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(slots=True)
class StreamResult:
    streams: int
    ttfc_ms: float  # median time from sending the request to the first `data:` event
    chunks_per_s: float  # median of (events in the stream / whole stream time)
    chunks: int  # events in the last stream, [DONE] excluded
    errors: int

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str | None:
    path = wrk_path()
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"wrk\s+(\S+)", out.stdout + out.stderr)
    return f"wrk {match.group(1)}" if match else "wrk"


def chat_body(model: str, *, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Hello"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}


# -- wrk -------------------------------------------------------------------------------------------

_WRK_SCRIPT = """
local bodies = {%(bodies)s}
local n = 0
wrk.method = "POST"
%(headers)s
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,"errors":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def _lua_string(text: str) -> str:
    level = "=" * 4
    return f"[{level}[{text}]{level}]"


def run_wrk(
    url: str, bodies: Sequence[bytes], headers: dict[str, str], concurrency: int, seconds: int, cpus: str | None
) -> LoadResult:
    path = wrk_path()
    assert path is not None, "wrk is not installed"
    script = _WRK_SCRIPT % {
        "bodies": ", ".join(_lua_string(b.decode()) for b in bodies),
        "headers": "\n".join(f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    command = [path, "-t1", f"-c{concurrency}", f"-d{max(1, seconds)}s", "--timeout", "10s", "-s", handle.name, url]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    finally:
        Path(handle.name).unlink(missing_ok=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    data = json.loads(line[6:])
    duration = data["duration_us"] / 1e6
    return LoadResult(
        requests=data["requests"], seconds=duration, rps=data["requests"] / duration,
        p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, errors=data["errors"], tool="wrk",
    )


# -- aiohttp ---------------------------------------------------------------------------------------


def _session(limit: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))


async def run_aiohttp(
    url: str, bodies: Sequence[bytes], headers: dict[str, str], concurrency: int, seconds: float
) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter

    async with _session(concurrency) as session:
        started = clock()
        deadline = started + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            n = offset
            while clock() < deadline:
                body = bodies[n % len(bodies)]
                n += 1
                sent = clock()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if response.status != 200:
                            errors += 1
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                latencies.append(clock() - sent)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = clock() - started
    return _summary(latencies, elapsed, errors, "aiohttp")


def _summary(latencies: list[float], elapsed: float, errors: int, tool: str) -> LoadResult:
    if not latencies:
        return LoadResult(0, elapsed, 0.0, float("nan"), float("nan"), errors, tool)
    ordered = sorted(latencies)
    return LoadResult(
        requests=len(ordered), seconds=elapsed, rps=len(ordered) / elapsed,
        p50_ms=percentile(ordered, 50) * 1000, p99_ms=percentile(ordered, 99) * 1000, errors=errors, tool=tool,
    )


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def run_load(
    url: str,
    bodies: Sequence[bytes],
    headers: dict[str, str],
    concurrency: int,
    seconds: int,
    cpus: str | None,
    *,
    tool: str = "auto",
) -> LoadResult:
    """Closed-loop load for `seconds`; `tool` is wrk, aiohttp or auto (wrk when installed)."""
    if tool == "wrk" or (tool == "auto" and wrk_path()):
        return run_wrk(url, bodies, headers, concurrency, seconds, cpus)
    result: LoadResult = run_async(run_aiohttp(url, bodies, headers, concurrency, seconds))
    return result


def run_async(coro: Awaitable[Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


# -- streams -----------------------------------------------------------------------------------


class _EventCounter:
    """Counts `data:` events in a byte stream cut anywhere; `[DONE]` is not counted."""

    __slots__ = ("_tail", "count", "done")

    def __init__(self) -> None:
        self.count = 0
        self.done = False
        self._tail = b""

    def feed(self, chunk: bytes) -> int:
        data = self._tail + chunk
        new = data.count(b"data:") - self._tail.count(b"data:")
        if b"[DONE]" in data:
            self.done = True
            new -= 1
        self._tail = data[-8:] if b"[DONE]" not in data else b""
        self.count += new
        return new


async def one_stream(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> tuple[float, float, int]:
    """(time to first event, whole time, events) for one streamed request."""
    clock = time.perf_counter
    sent = clock()
    first = 0.0
    counter = _EventCounter()
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
        async for chunk in response.content.iter_any():
            if counter.feed(chunk) and not first:
                first = clock()
    if counter.count == 0:
        raise RuntimeError("stream carried no events")
    return first - sent, clock() - sent, counter.count


async def measure_streams(url: str, body: bytes, headers: dict[str, str], n: int) -> StreamResult:
    """`n` streams one after the other (concurrency 1)."""
    ttfc: list[float] = []
    rates: list[float] = []
    chunks = errors = 0
    async with _session(1) as session:
        for _ in range(n):
            try:
                first, whole, chunks = await one_stream(session, url, body, headers)
            except (TimeoutError, aiohttp.ClientError, RuntimeError):
                errors += 1
                continue
            ttfc.append(first)
            rates.append(chunks / whole)
    if not ttfc:
        return StreamResult(0, float("nan"), float("nan"), 0, errors)
    return StreamResult(len(ttfc), statistics.median(ttfc) * 1000, statistics.median(rates), chunks, errors)


# -- overhead header ---------------------------------------------------------------------------


async def sample_overhead_header(url: str, body: bytes, headers: dict[str, str], n: int) -> list[float]:
    """The gateway's own `x-chatbridge-overhead-ms` over `n` sequential requests."""
    values: list[float] = []
    async with _session(1) as session:
        for _ in range(n):
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                value = response.headers.get("x-chatbridge-overhead-ms")
                if value is not None:
                    values.append(float(value))
    return values


# -- many open streams ---------------------------------------------------------------------------


async def hold_streams(
    url: str,
    body: bytes,
    headers: dict[str, str],
    n: int,
    while_open: Callable[[int], Awaitable[Any]],
    open_timeout: float = 60.0,
) -> tuple[int, Any]:
    """Open `n` concurrent streams, wait until each has sent its first event, call
    `while_open(opened)` with them all open, then disconnect every client.

    Returns (streams that were open at the call, what `while_open` returned).
    """
    opened = 0
    all_open = asyncio.Event()
    release = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal opened
        counted = False
        try:
            async with session.post(url, data=body, headers=headers) as response:
                counter = _EventCounter()
                async for chunk in response.content.iter_any():
                    if not counted and counter.feed(chunk):
                        counted = True
                        opened += 1
                        if opened == n:
                            all_open.set()
                        await release.wait()
                        return  # leaving the block closes the connection: a client disconnect
        except (TimeoutError, aiohttp.ClientError):
            pass

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.create_task(client(session)) for _ in range(n)]
        try:
            await asyncio.wait_for(all_open.wait(), open_timeout)
        except TimeoutError:
            pass
        at_call = opened
        result = await while_open(at_call)
        release.set()
        await asyncio.wait(tasks, timeout=30)
        for task in tasks:
            task.cancel()
    return at_call, result
