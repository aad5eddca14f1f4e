"""What the Redis state store costs: per store operation, and per request through the whole gateway.

    python -m bench.redis_state [--seconds S] [--runs N] [--ops N] [--out DIR]   (also bench.run's `redis` phase)

Standalone, it writes DIR/redis-state.json and redis-state.md (DIR: bench/results).

Starts a redis-server of its own (`--save '' --appendonly no`, on a free loopback port), then

* per operation: `get`, `set`, `incr` and `claim_slot` (+ `release_slot`) against an
  EmbeddedStore and a RedisStore, awaited one after another in this process; µs per call;
* per request: two gateways on the same upstream emulators, one without REDIS_URL (embedded
  state) and one with it, measured back to back at concurrency 1 and 16, for the
  OpenAI-compatible provider and for K2Think (which has a credential pool); the added latency is
  the Redis gateway's p50/p99 minus the embedded one's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/redis_state.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load, procs

CONCURRENCY = (1, 16)
OPERATIONS = ("get", "set", "incr", "claim_slot")


class RedisProcess:
    """redis-server on a free loopback port, pinned like the other helper processes."""

    def __init__(self, cpus: str | None, log_dir: Path) -> None:
        self.port = procs.free_port()
        self.cpus = cpus if procs.can_pin() else None
        self.log_path = log_dir / f"bench-redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command = ["taskset", "-c", self.cpus, *argv] if self.cpus else argv
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start: {self.log_path.read_text(errors='replace')[-500:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def available() -> str | None:
    """None when this machine can run the Redis phase, else why not."""
    return None if shutil.which("redis-server") else "redis-server is not installed"


# -- per operation ---------------------------------------------------------------------------------


async def _time_calls(call: Callable[[int], Awaitable[object]], n: int) -> dict[str, float]:
    for i in range(min(200, n)):  # warm-up: connections, scripts loaded
        await call(i)
    samples = []
    for i in range(n):
        start = time.perf_counter_ns()
        await call(i)
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return {"p50_us": round(statistics.median(samples), 1), "mean_us": round(statistics.fmean(samples), 1),
            "p99_us": round(samples[min(len(samples) - 1, int(0.99 * len(samples)))], 1)}


async def _store_ops(store: Any, n: int) -> dict[str, dict[str, float]]:
    value = {"credentials": {"c1": {"disabled": False, "failures": 0, "cooling_until": None}}}
    async with store:
        await store.set("bench:k", value)
        out = {
            "get": await _time_calls(lambda i: store.get("bench:k"), n),
            "set": await _time_calls(lambda i: store.set("bench:k", value), n),
            "incr": await _time_calls(lambda i: store.incr("bench:n", ttl=60), n),
        }

        async def claim(i: int) -> None:
            await store.claim_slot("bench:slot", f"h{i}", 4, 30)
            await store.release_slot("bench:slot", f"h{i}")

        out["claim_slot"] = await _time_calls(claim, n)  # claim + release: what a stream costs
    return out


def store_ops(redis_url: str, n: int, work: Path) -> dict[str, Any]:
    from chatbridge.state import EmbeddedStore
    from chatbridge.state.redis import RedisStore

    embedded = asyncio.run(_store_ops(EmbeddedStore(work / "bench-state.json"), n))
    redis = asyncio.run(_store_ops(RedisStore(redis_url, prefix="bench:", timeout=1.0), n))
    return {
        "n": n,
        "embedded": embedded,
        "redis": redis,
        "added_p50_us": {op: round(redis[op]["p50_us"] - embedded[op]["p50_us"], 1) for op in OPERATIONS},
        "note": "Awaited one after another from one asyncio task on the harness's core; redis-server on the same "
                "core. claim_slot is a claim plus its release.",
    }


# -- per request, through the gateway --------------------------------------------------------------


def _point(service: procs.Service, model: str, concurrency: int, seconds: int, cpus: str | None, tool: str) -> dict[str, Any]:
    result = load.run_load(service.base_url + "/v1/chat/completions", [load.chat_body(model)],
                           load.auth_headers(procs.API_KEY), concurrency, seconds, cpus, tool=tool)
    return result.as_dict()


def gateway_compare(
    redis_url: str, *, server_cpu: str | None, client_cpu: str | None, seconds: int, warmup: int, runs: int,
    work: Path, logs: Path, tool: str, concurrency: tuple[int, ...] = CONCURRENCY,
) -> dict[str, Any]:
    started: list[procs.Service] = []

    def spawn(service: procs.Service) -> procs.Service:
        started.append(service.start())
        return service

    try:
        emu = spawn(procs.openai_emulator("emu-redis-phase", client_cpu, log_dir=logs))
        k2 = spawn(procs.k2think_emulator("k2-redis-phase", client_cpu, log_dir=logs))
        gateways = {
            "embedded": spawn(procs.gateway("chatbridge-embedded", server_cpu, openai_upstream=emu, k2think_upstream=k2,
                                            work_dir=work, log_dir=logs)),
            "redis": spawn(procs.gateway("chatbridge-redis", server_cpu, openai_upstream=emu, k2think_upstream=k2,
                                         work_dir=work, log_dir=logs, env={"REDIS_URL": redis_url})),
        }
        for service in started:
            service.wait_ready()
        models = {"openai-compat": procs.MODEL, "k2think": procs.K2_MODEL}
        rows: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
            store: {m: {str(c): [] for c in concurrency} for m in models} for store in gateways}
        for gateway in gateways.values():
            for model in models.values():
                _point(gateway, model, max(concurrency), warmup, client_cpu, tool)
        commands = {label: [0, 0] for label in models}  # Redis commands, requests: per model, Redis gateway only
        for run in range(runs):
            order = list(gateways) if run % 2 == 0 else list(gateways)[::-1]
            for label, model in models.items():
                for c in concurrency:
                    for store in order:
                        before = _commands_processed(redis_url)
                        row = _point(gateways[store], model, c, seconds, client_cpu, tool)
                        rows[store][label][str(c)].append(row)
                        if store == "redis":
                            commands[label][0] += _commands_processed(redis_url) - before - 1  # less our own INFO
                            commands[label][1] += row["requests"]
        errors = [line for g in gateways.values() for line in g.log_tail(200).splitlines() if "state store" in line]
    finally:
        for service in reversed(started):
            service.stop()
    out = summarise_requests(rows, errors)
    out["redis_commands_per_request"] = {label: round(n / max(1, requests), 3) for label, (n, requests) in commands.items()}
    return out


def _commands_processed(redis_url: str) -> int:
    """Commands the server has run so far (its INFO counter), to count what a request costs in Redis."""
    import redis

    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        return int(client.info("stats")["total_commands_processed"])


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarise_requests(rows: Mapping[str, Mapping[str, Mapping[str, list[dict[str, Any]]]]], log_lines: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": {}, "added": {}, "state_store_log_lines": log_lines[:5]}
    for store, by_model in rows.items():
        out["rows"][store] = {
            model: {c: {"rps": _median([r["rps"] for r in runs]), "p50_ms": _median([r["p50_ms"] for r in runs]),
                        "p99_ms": _median([r["p99_ms"] for r in runs]), "errors": sum(r["errors"] for r in runs)}
                    for c, runs in by_c.items() if runs}
            for model, by_c in by_model.items()
        }
    embedded, redis = out["rows"].get("embedded", {}), out["rows"].get("redis", {})
    for model, by_c in redis.items():
        out["added"][model] = {
            c: {"p50_ms": round(row["p50_ms"] - embedded[model][c]["p50_ms"], 3),
                "p99_ms": round(row["p99_ms"] - embedded[model][c]["p99_ms"], 3),
                "rps_ratio": round(row["rps"] / embedded[model][c]["rps"], 3) if embedded[model][c]["rps"] else None}
            for c, row in by_c.items() if c in embedded.get(model, {})
        }
    return out


def measure(*, server_cpu: str | None, client_cpu: str | None, seconds: int, warmup: int, runs: int, ops: int,
            work: Path, logs: Path, tool: str, concurrency: tuple[int, ...] = CONCURRENCY) -> dict[str, Any]:
    """The whole phase: a redis-server of its own, the per-operation and the per-request figures."""
    server = RedisProcess(client_cpu, logs).start()
    try:
        result: dict[str, Any] = {"operations": store_ops(server.url, ops, work)}
        result["requests"] = gateway_compare(server.url, server_cpu=server_cpu, client_cpu=client_cpu, seconds=seconds,
                                             warmup=warmup, runs=runs, work=work, logs=logs, tool=tool,
                                             concurrency=concurrency)
    finally:
        server.stop()
    result["setup"] = ("redis-server (no persistence) on the load generator's core; both gateways on the server core, "
                       "same emulators; the two measured back to back per point, order alternating between runs.")
    return result


def render_markdown(result: Mapping[str, Any]) -> list[str]:
    ops = result.get("operations") or {}
    lines = ["", "## State store: Redis vs embedded", "", str(result.get("setup", "")), "",
             f"Per operation ({ops.get('n', '?')} calls each; {ops.get('note', '')})", "",
             "| operation | embedded p50 µs | Redis p50 µs | Redis p99 µs | added p50 µs |", "|---|---:|---:|---:|---:|"]
    for op in OPERATIONS:
        e, r = ops.get("embedded", {}).get(op), ops.get("redis", {}).get(op)
        if e and r:
            lines.append(f"| {op} | {e['p50_us']:.1f} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | {ops['added_p50_us'][op]:+.1f} |")
    requests = result.get("requests") or {}
    per_request = requests.get("redis_commands_per_request") or {}
    counted = ", ".join(f"{model} {n:g}" for model, n in per_request.items())
    lines += ["", "Per request, non-streamed chat completions through the whole gateway"
              + (f" (Redis commands per request, counted by the server: {counted})" if counted else "") + ":", "",
              "| provider | conc. | embedded p50 ms | Redis p50 ms | added p50 ms | added p99 ms | req/s vs embedded |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for model, by_c in (requests.get("added") or {}).items():
        for c, added in by_c.items():
            e, r = requests["rows"]["embedded"][model][c], requests["rows"]["redis"][model][c]
            ratio = f"{added['rps_ratio']:.1%}" if added.get("rps_ratio") is not None else "–"
            lines.append(f"| {model} | {c} | {e['p50_ms']:.3f} | {r['p50_ms']:.3f} | {added['p50_ms']:+.3f} | "
                         f"{added['p99_ms']:+.2f} | {ratio} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_state", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=2, help="seconds per measured point")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--ops", type=int, default=2000, help="calls per store operation")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    reason = available()
    if reason:
        print(f"skipped: {reason}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="chatbridge-bench-redis-"))
    logs = work / "logs"
    logs.mkdir()
    pinned = procs.can_pin()
    result = measure(server_cpu="0" if pinned else None, client_cpu="1" if pinned else None, seconds=args.seconds,
                     warmup=1, runs=args.runs, ops=args.ops, work=work, logs=logs,
                     tool="wrk" if load.wrk_path() else "aiohttp")
    result["meta"] = {"generated_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds_per_point": args.seconds,
                      "runs": args.runs, "pinned": pinned, "load_generator": "wrk" if load.wrk_path() else "aiohttp",
                      "load_average": _load_average()}
    text = "\n".join(render_markdown(result)).lstrip("\n") + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "redis-state.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / "redis-state.md").write_text(f"{text}\nGenerated {result['meta']['generated_at']}, "
                                             f"{args.runs} run(s) of {args.seconds} s per point, load average "
                                             f"{result['meta']['load_average']} at the start.\n", encoding="utf-8")
    print(text)
    return 0


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
