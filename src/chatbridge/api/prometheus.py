"""`GET /metrics`: the Prometheus text exposition, summed over every worker process.

Counters and histograms are counted where things happen (`core.metrics`); the gauges that
describe state (credentials by state, sessions, the state store) are set here, at scrape time,
from this process's runtime. Under `chatbridge serve --workers N` each worker writes its own
files in PROMETHEUS_MULTIPROC_DIR (set by the parent before the workers start) and a scrape,
whichever worker answers it, reads them all (`MultiProcessCollector`); the files of workers
that have died are cleaned (`mark_process_dead`), their counts kept.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import Receive, Scope, Send

from chatbridge.api.asgi import RawHeaders, overhead_header
from chatbridge.api.endpoint import send_json
from chatbridge.api.errors import ApiError, error_body_for_path
from chatbridge.core.metrics import CREDENTIALS, SESSIONS, STATE_STORE_UP
from chatbridge.runtime import Runtime

log = logging.getLogger("chatbridge.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_STATES = ("active", "cooling", "disabled", "expired")
_PID = re.compile(r"_(\d+)\.db$")


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def clean_dead_workers(directory: Path) -> int:
    """Drop the live-gauge files of worker processes that are gone (their counters stay summed)."""
    dead = set()
    for path in directory.glob("*.db"):
        match = _PID.search(path.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
    return len(dead)


def worker_exiting() -> None:
    """This worker stops: its live gauges leave the sums (its counts stay)."""
    directory = multiprocess_dir()
    if directory is not None:
        mark_process_dead(os.getpid(), str(directory))  # type: ignore[no-untyped-call]


class MetricsEndpoint:
    """`/metrics` as a raw lane (the key check is GatewayApp's: the admin key unless METRICS_PUBLIC)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send, headers: RawHeaders) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            error = ApiError(405, f"Method {scope['method']} is not allowed on {scope['path']}",
                             "invalid_request_error", "method_not_allowed")
            await send_json(send, 405, error_body_for_path(scope["path"], error),
                            [*headers, (b"allow", b"GET, HEAD"), overhead_header(scope)])
            return
        await self.update_gauges()
        body = self.render()
        start = [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", b"%d" % len(body)),
                 (b"cache-control", b"no-store"), *headers, overhead_header(scope)]
        await send({"type": "http.response.start", "status": 200, "headers": start})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    def render(self) -> bytes:
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(REGISTRY)
        clean_dead_workers(directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    async def update_gauges(self) -> None:
        """Credentials by state and sessions, as this process sees them now."""
        runtime = self.runtime
        for provider, pool in runtime.pools.items():
            counts = pool.counts()
            for state in _STATES:
                CREDENTIALS.labels(provider, state).set(counts.get(state, 0))
        for provider, wiring in runtime.wirings.items():
            sessions = getattr(wiring.planner, "store", None)
            count = getattr(sessions, "count", None)
            if count is not None:
                try:
                    SESSIONS.labels(provider).set(await count())
                except Exception as exc:  # the store is unreachable: the last value stays
                    log.warning("sessions of %s not counted: %s", provider, exc)
        status = getattr(runtime.store, "status", None)  # the state store's own report, where it has one
        STATE_STORE_UP.set(1 if status is None or status().up else 0)  # the embedded store is always up
