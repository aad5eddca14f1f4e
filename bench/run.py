"""Benchmark chatbridge against the direct path and LiteLLM's proxy, on this machine.

    python -m bench.run [--quick] [--skip-litellm] [--runs N]      (or: python bench/run.py ...)

Starts the upstream emulators, chatbridge and (when bench/install_litellm.sh has installed it)
LiteLLM's proxy as child processes on free loopback ports, measures every server in the same
run, and writes bench/results/latest.json, latest.md and latest.png. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load, procs, redis_state, report
from bench.procs import API_KEY, K2_MODEL, MODEL, STREAM_MODEL, Service

SERVER_CPU = "0"  # the server under test, alone
CLIENT_CPU = "1"  # the load generator, the upstream emulators behind a gateway, this script
RESULTS = Path(__file__).resolve().parent / "results"
PHASES = frozenset({"throughput", "stream_load", "floor", "streams", "memory", "growth", "workers", "redis"})
CHAT = "/v1/chat/completions"


@dataclass(frozen=True)
class Plan:
    mode: str
    runs: int
    seconds: int  # per measured point
    warmup_seconds: int
    streams: int  # 500-chunk streams per server per run
    stream_chunks: int
    overhead_samples: int
    open_streams: int
    growth_requests: int
    growth_batch_seconds: int
    workers: bool


QUICK = Plan("quick", runs=1, seconds=1, warmup_seconds=1, streams=3, stream_chunks=500, overhead_samples=200,
             open_streams=1000, growth_requests=10_000, growth_batch_seconds=1, workers=False)
FULL = Plan("full", runs=5, seconds=5, warmup_seconds=3, streams=20, stream_chunks=500, overhead_samples=2000,
            open_streams=1000, growth_requests=100_000, growth_batch_seconds=5, workers=True)

_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


@dataclass
class Target:
    name: str
    service: Service
    model: str
    stream_service: Service | None = None
    stream_model: str | None = None

    @property
    def url(self) -> str:
        return self.service.base_url + CHAT

    @property
    def headers(self) -> dict[str, str]:
        return load.auth_headers(API_KEY)


@dataclass
class Checkout:
    """A second chatbridge to measure in the same run (`--before`): its `src/`, and the worktree
    made for it (removed at the end) when it was given as a revision."""

    spec: str
    src: Path
    commit: str | None
    worktree: Path | None = None

    def remove(self) -> None:
        if self.worktree is not None:
            subprocess.run(["git", "-C", str(procs.ROOT), "worktree", "remove", "--force", str(self.worktree)],
                           capture_output=True, timeout=60, check=False)
            self.worktree = None


def checkout(spec: str, work: Path, role: str = "before") -> Checkout:
    """`spec` is a checkout's folder (or its `src/`), else a git revision of this repository,
    checked out into a temporary worktree; `role` names the option it came from."""
    path = Path(spec).expanduser()
    for src in (path / "src", path):
        if (src / "chatbridge" / "__init__.py").is_file():
            return Checkout(spec, src.resolve(), _git_commit(src))
    tree = work / f"{role}-checkout"
    say(f"--{role} {spec}: checking it out into a temporary git worktree ({tree})")
    done = subprocess.run(["git", "-C", str(procs.ROOT), "worktree", "add", "--detach", str(tree), spec],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise SystemExit(f"--{role} {spec}: neither a chatbridge checkout nor a revision: {done.stderr.strip()}")
    return Checkout(spec, tree / "src", _git_commit(tree), tree)


class Bench:
    def __init__(self, plan: Plan, *, skip_litellm: bool, loadgen: str, out_dir: Path,
                 before: str | None = None, after: str | None = None) -> None:
        self.plan = plan
        self.skip_litellm = skip_litellm
        self.loadgen = loadgen if loadgen != "auto" else ("wrk" if load.wrk_path() else "aiohttp")
        self.out_dir = out_dir
        self.work = Path(tempfile.mkdtemp(prefix="chatbridge-bench-"))
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.pinned = procs.can_pin()
        self.server_cpu = SERVER_CPU if self.pinned else None
        self.client_cpu = CLIENT_CPU if self.pinned else None
        self.services: list[Service] = []
        self.notes: list[str] = []
        self.litellm_info: dict[str, Any] = {"status": "skipped", "version": None, "note": ""}
        self.emu_upstream: Service | None = None
        self.before = checkout(before, self.work) if before else None
        # `--after`: the chatbridge measured as "chatbridge" (default: this checkout's own src/)
        self.after = checkout(after, self.work, "after") if after else None

    # -- processes ---------------------------------------------------------------------------

    def _spawn(self, service: Service) -> Service:
        self.services.append(service.start())
        return service

    def _stop(self, service: Service) -> None:
        service.stop()
        if service in self.services:
            self.services.remove(service)

    def stop_all(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()

    def start_main(self) -> dict[str, Target]:
        s, c, logs = self.server_cpu, self.client_cpu, self.logs
        chunks = self.plan.stream_chunks
        emu_direct = self._spawn(procs.openai_emulator("emu-direct", s, log_dir=logs))
        emu_up = self._spawn(procs.openai_emulator("emu-upstream", c, log_dir=logs))
        emu_s_direct = self._spawn(procs.openai_emulator("emu-stream-direct", s, chunks=chunks, log_dir=logs))
        emu_s_up = self._spawn(procs.openai_emulator("emu-stream-upstream", c, chunks=chunks, log_dir=logs))
        k2_up = self._spawn(procs.k2think_emulator("k2-upstream", c, log_dir=logs))
        self.emu_upstream = emu_up
        # K2Think replies carry reasoning and an answer, each cut into `chunks` pieces
        k2_s_up = self._spawn(procs.k2think_emulator("k2-stream-upstream", c, chunks=chunks // 2, log_dir=logs))
        mine = self.after.src if self.after is not None else None
        gw = self._spawn(procs.gateway("chatbridge", s, openai_upstream=emu_up, k2think_upstream=k2_up,
                                       work_dir=self.work, log_dir=logs, src=mine))
        gw_s = self._spawn(procs.gateway("chatbridge-stream", s, openai_upstream=emu_s_up, k2think_upstream=k2_s_up,
                                         work_dir=self.work, log_dir=logs, src=mine))
        proxy = self._spawn(procs.floor_proxy("floor-proxy", s, upstream=emu_up, log_dir=logs))
        proxy_s = self._spawn(procs.floor_proxy("floor-proxy-stream", s, upstream=emu_s_up, log_dir=logs))
        before = before_s = None
        if self.before is not None:
            src = self.before.src
            before = self._spawn(procs.gateway("before", s, openai_upstream=emu_up, work_dir=self.work, log_dir=logs, src=src))
            before_s = self._spawn(procs.gateway("before-stream", s, openai_upstream=emu_s_up, work_dir=self.work,
                                                 log_dir=logs, src=src))
        litellm = None
        if self.skip_litellm:
            self.litellm_info["note"] = "skipped with --skip-litellm"
        else:
            ok, detail = procs.litellm_status()
            if ok:
                litellm = self._spawn(procs.litellm_proxy("litellm", s, upstream=emu_up, stream_upstream=emu_s_up,
                                                          work_dir=self.work, log_dir=logs))
                self.litellm_info.update(status="measured", version=detail)
            else:
                self.litellm_info["note"] = detail
                say(f"LiteLLM skipped: {detail}")
        say(f"started {len(self.services)} processes; waiting for them to listen")
        for service in list(self.services):
            try:
                service.wait_ready(timeout=90 if service is litellm else 30)
            except RuntimeError as exc:
                if service is not litellm:
                    raise
                self.litellm_info.update(status="skipped", note=f"failed to start: {str(exc).splitlines()[0]}")
                say(f"LiteLLM skipped: {exc}")
                self._stop(service)
                litellm = None
        targets = {
            "direct": Target("direct", emu_direct, MODEL, emu_s_direct, MODEL),
            "floor-proxy": Target("floor-proxy", proxy, MODEL, proxy_s, MODEL),
            "chatbridge": Target("chatbridge", gw, MODEL, gw_s, MODEL),
        }
        if before is not None and before_s is not None:
            targets["before"] = Target("before", before, MODEL, before_s, MODEL)
        if litellm is not None:
            targets["litellm"] = Target("litellm", litellm, MODEL, litellm, STREAM_MODEL)
        targets["chatbridge-k2think"] = Target("chatbridge-k2think", gw, K2_MODEL, gw_s, K2_MODEL)
        return targets

    # -- phases ------------------------------------------------------------------------------

    def point(self, target: Target, concurrency: int, seconds: int, bodies: list[bytes] | None = None) -> dict[str, Any]:
        bodies = bodies or [load.chat_body(target.model)]
        cpu_before = target.service.cpu_seconds()
        result = load.run_load(target.url, bodies, target.headers, concurrency, seconds, self.client_cpu, tool=self.loadgen)
        cpu = target.service.cpu_seconds() - cpu_before
        row = result.as_dict()
        row["cpu_ms_per_request"] = round(cpu * 1000 / result.requests, 4) if result.requests else None
        return row

    def throughput(self, targets: dict[str, Target]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        plan = self.plan
        out: dict[str, dict[str, list[dict[str, Any]]]] = {t: {str(c): [] for c in report.CONCURRENCY} for t in targets}
        for target in targets.values():
            say(f"warm-up {target.name} ({plan.warmup_seconds}s)")
            self.point(target, 16, plan.warmup_seconds)
        names = list(targets)
        for run in range(plan.runs):
            order = names[run % len(names):] + names[:run % len(names)]  # rotate, so no server always goes first
            for name in order:
                for c in report.CONCURRENCY:
                    row = self.point(targets[name], c, plan.seconds)
                    out[name][str(c)].append(row)
                    say(f"run {run + 1}/{plan.runs} {name:<19} c={c:<3} {row['rps']:>9,.0f} req/s  "
                        f"p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.2f} ms  errors {row['errors']}")
        return out

    def stream_load(self, targets: dict[str, Target]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Streamed requests in a closed loop, each read to its end: streams per second at each concurrency."""
        plan = self.plan
        chosen = {n: t for n, t in targets.items() if n in ("direct", "floor-proxy", "chatbridge", "before")}
        out: dict[str, dict[str, list[dict[str, Any]]]] = {t: {str(c): [] for c in report.CONCURRENCY} for t in chosen}
        streamed = {n: Target(n, t.stream_service or t.service, t.stream_model or t.model) for n, t in chosen.items()}
        bodies = {n: [load.chat_body(t.model, stream=True)] for n, t in streamed.items()}
        for name, target in streamed.items():
            say(f"warm-up streamed {name} ({plan.warmup_seconds}s)")
            self.point(target, 8, plan.warmup_seconds, bodies[name])
        names = list(streamed)
        for run in range(plan.runs):
            order = names[run % len(names):] + names[:run % len(names)]
            for name in order:
                for c in report.CONCURRENCY:
                    row = self.point(streamed[name], c, plan.seconds, bodies[name])
                    out[name][str(c)].append(row)
                    say(f"run {run + 1}/{plan.runs} streamed {name:<12} c={c:<3} {row['rps']:>8,.1f} streams/s  "
                        f"p50 {row['p50_ms']:8.2f} ms  errors {row['errors']}")
        return out

    def floor(self) -> dict[str, list[dict[str, Any]]]:
        """The libraries alone, on the same core as the gateway: uvicorn with a constant answer
        (load from wrk at concurrency 64) and aiohttp's client posting to the same emulator."""
        assert self.emu_upstream is not None, "start_main() first"
        server = self._spawn(procs.floor_server("floor-server", self.server_cpu, log_dir=self.logs))
        server.wait_ready()
        target = Target("floor-server", server, MODEL)
        url = self.emu_upstream.base_url + CHAT
        out: dict[str, list[dict[str, Any]]] = {"server": [], "client": []}
        try:
            self.point(target, 64, self.plan.warmup_seconds)
            for run in range(self.plan.runs):
                row = self.point(target, 64, self.plan.seconds)
                client = procs.floor_client(url, self.server_cpu, concurrency=64, seconds=self.plan.seconds)
                out["server"].append(row)
                out["client"].append(client)
                say(f"run {run + 1}/{self.plan.runs} floor: uvicorn alone {row['cpu_ms_per_request'] or 0:.3f} ms CPU/req, "
                    f"aiohttp client alone {client['cpu_ms_per_request'] or 0:.3f} ms CPU/req")
        finally:
            self._stop(server)
        return out

    def streams(self, targets: dict[str, Target]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for target in targets.values():
            assert target.stream_service is not None and target.stream_model is not None
            url = target.stream_service.base_url + CHAT
            body = load.chat_body(target.stream_model, stream=True)
            load.run_async(load.measure_streams(url, body, target.headers, 2))  # warm-up
            out[target.name] = []
        for run in range(self.plan.runs):
            for target in targets.values():
                url = target.stream_service.base_url + CHAT  # type: ignore[union-attr]
                body = load.chat_body(target.stream_model or MODEL, stream=True)
                result = load.run_async(load.measure_streams(url, body, target.headers, self.plan.streams))
                out[target.name].append(result.as_dict())
                say(f"run {run + 1}/{self.plan.runs} stream {target.name:<19} {result.chunks} chunks  "
                    f"TTFC {result.ttfc_ms:7.2f} ms  {result.chunks_per_s:9,.0f} chunks/s  errors {result.errors}")
        return out

    def overhead_header(self, target: Target) -> list[float]:
        values: list[float] = load.run_async(load.sample_overhead_header(
            target.url, load.chat_body(target.model), target.headers, self.plan.overhead_samples))
        if values:
            say(f"x-chatbridge-overhead-ms over {len(values)} requests: p50 {statistics.median(values):.3f} ms")
        return values

    def memory(self) -> dict[str, Any]:
        """RSS of a fresh gateway, idle after warm-up, then with N concurrent streams open."""
        n = self.plan.open_streams
        # each stream lasts ~30 s upstream: long enough to open them all and measure
        emu = procs.openai_emulator("emu-slow", self.client_cpu, chunks=120, delay=0.25, log_dir=self.logs)
        gw = procs.gateway("chatbridge-memory", self.server_cpu, openai_upstream=emu, work_dir=self.work, log_dir=self.logs)
        self._spawn(emu)
        self._spawn(gw)
        emu.wait_ready()
        gw.wait_ready()
        url, body, headers = gw.base_url + CHAT, load.chat_body(MODEL, stream=True), load.auth_headers(API_KEY)

        async def nothing(opened: int) -> None:
            await asyncio.sleep(0.2)

        async def sample(opened: int) -> int:
            peak = 0
            for _ in range(5):
                peak = max(peak, gw.rss_kib())
                await asyncio.sleep(0.2)
            return peak

        try:
            say(f"memory: warm-up with {min(200, n)} streams, then {n} concurrent open streams")
            load.run_async(load.hold_streams(url, body, headers, min(200, n), nothing, open_timeout=20))
            time.sleep(1.5)  # let the gateway see every disconnect and settle
            before = gw.rss_kib()
            opened, during = load.run_async(load.hold_streams(url, body, headers, n, sample, open_timeout=25))
        finally:
            self._stop(gw)
            self._stop(emu)
        per_stream = (during - before) / opened if opened else None
        say(f"memory: {opened}/{n} streams open; RSS {before:,} → {during:,} KiB; "
            f"{per_stream if per_stream is not None else float('nan'):.1f} KiB per stream")
        if opened < n:
            self.notes.append(f"Only {opened} of {n} streams were open at once in the memory test.")
        return {"streams": n, "opened": opened, "rss_before_kib": before, "rss_during_kib": during,
                "kib_per_stream": round(per_stream, 2) if per_stream is not None else None}

    def growth(self) -> dict[str, Any]:
        """RSS of a fresh gateway across many requests (3 non-streamed : 1 streamed)."""
        plan = self.plan
        upstream = self._spawn(procs.openai_emulator("emu-growth", self.client_cpu, log_dir=self.logs))
        upstream.wait_ready()
        gw = self._spawn(procs.gateway("chatbridge-growth", self.server_cpu, openai_upstream=upstream,
                                       work_dir=self.work, log_dir=self.logs))
        gw.wait_ready()
        target = Target("chatbridge-growth", gw, MODEL)
        plain, streamed = load.chat_body(MODEL), load.chat_body(MODEL, stream=True)
        bodies = [plain, plain, plain, streamed]
        try:
            warm = self.point(target, 64, max(2, plan.warmup_seconds * 2), bodies)
            time.sleep(0.5)
            series = [[0, gw.rss_kib()]]
            served = 0
            while served < plan.growth_requests:
                row = self.point(target, 64, plan.growth_batch_seconds, bodies)
                served += row["requests"]
                time.sleep(0.3)
                series.append([served, gw.rss_kib()])
                say(f"growth: {served:>8,} requests, RSS {series[-1][1]:,} KiB")
        finally:
            self._stop(gw)
            self._stop(upstream)
        half = min(series, key=lambda p: abs(p[0] - served / 2))
        return {
            "requests": served, "warmup_requests": warm["requests"], "mix": "3 non-streamed : 1 streamed, concurrency 64",
            "series": series, "total_growth_kib": series[-1][1] - series[0][1],
            "late_growth_kib": series[-1][1] - half[1], "late_from_requests": half[0],
        }

    def workers(self) -> dict[str, Any]:
        """1 vs 2 worker processes; nothing pinned, so the gateway may use both cores."""
        emu = self._spawn(procs.openai_emulator("emu-workers", None, log_dir=self.logs))
        emu.wait_ready()
        results: dict[str, Any] = {}
        try:
            for n in (1, 2):
                gw = self._spawn(procs.gateway(f"chatbridge-w{n}", None, openai_upstream=emu, workers=n,
                                               work_dir=self.work, log_dir=self.logs))
                gw.wait_ready()
                target = Target(f"workers-{n}", gw, MODEL)
                try:
                    self.point(target, 64, self.plan.warmup_seconds)
                    rows = []
                    for _ in range(max(1, min(3, self.plan.runs))):
                        result = load.run_load(target.url, [load.chat_body(MODEL)], target.headers, 64,
                                               self.plan.seconds, None, tool=self.loadgen)
                        rows.append(result.as_dict())
                finally:
                    self._stop(gw)
                results[str(n)] = {k: report.median([r[k] for r in rows]) for k in ("rps", "p50_ms", "p99_ms")}
                say(f"workers={n}: {results[str(n)]['rps']:,.0f} req/s at concurrency 64")
        finally:
            self._stop(emu)
        return {
            "note": "Nothing pinned here: gateway workers, emulator and load generator share both cores, so two "
                    "workers cannot double throughput on this 2-core machine.",
            "results": results,
        }

    def redis(self) -> dict[str, Any] | None:
        """The Redis state store's cost per operation and per request (bench/redis_state.py)."""
        reason = redis_state.available()
        if reason is not None:
            self.notes.append(f"Redis state store not measured: {reason}.")
            say(f"redis phase skipped: {reason}")
            return None
        quick = self.plan.mode == "quick"  # concurrency 1 only, fewer calls: a few seconds
        result = redis_state.measure(server_cpu=self.server_cpu, client_cpu=self.client_cpu, seconds=self.plan.seconds,
                                     warmup=self.plan.warmup_seconds, runs=self.plan.runs, ops=500 if quick else 10_000,
                                     work=self.work, logs=self.logs, tool=self.loadgen,
                                     concurrency=(1,) if quick else redis_state.CONCURRENCY)
        for model, by_c in result["requests"]["added"].items():
            for c, added in by_c.items():
                say(f"redis vs embedded state, {model} c={c}: p50 {added['p50_ms']:+.3f} ms, p99 {added['p99_ms']:+.2f} ms")
        for op, added in result["operations"]["added_p50_us"].items():
            say(f"redis store {op}: p50 {result['operations']['redis'][op]['p50_us']:.1f} µs ({added:+.1f} µs vs embedded)")
        return result

    # -- the whole run -------------------------------------------------------------------------

    def run(self, only: frozenset[str] = PHASES) -> dict[str, Any]:
        raw: dict[str, Any] = {"meta": self.meta()}
        try:
            if only & {"throughput", "stream_load", "floor", "streams"}:
                targets = self.start_main()
                if "throughput" in only:
                    raw["load"] = self.throughput(targets)
                    raw["overhead_header"] = self.overhead_header(targets["chatbridge"])
                if "stream_load" in only:
                    raw["stream_load"] = self.stream_load(targets)
                if "floor" in only:
                    raw["floor"] = self.floor()
                if "streams" in only:
                    raw["streams"] = self.streams(targets)
                self.stop_all()  # free the cores for the next phases
            if "redis" in only:
                raw["redis"] = self.redis()
            if "memory" in only:
                raw["memory"] = self.memory()
            if "growth" in only:
                raw["growth"] = self.growth()
            if self.plan.workers and "workers" in only:
                raw["workers"] = self.workers()
        finally:
            self.stop_all()
            for extra in (self.before, self.after):
                if extra is not None:
                    extra.remove()
        raw["meta"]["litellm"] = self.litellm_info
        doc = report.summarise(raw)
        doc["notes"] = self.notes + self.standing_notes(doc)
        return doc

    def meta(self) -> dict[str, Any]:
        cpu = _cpu_model()
        pin = ("server under test pinned to CPU 0; load generator, upstream emulators behind a gateway and this "
               "script pinned to CPU 1 (taskset)") if self.pinned else "nothing pinned (taskset or a second core missing)"
        tool = load.wrk_version() if self.loadgen == "wrk" else "Python aiohttp client"
        return {
            "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": self.plan.mode,
            "runs": self.plan.runs,
            "seconds_per_point": self.plan.seconds,
            "machine": {
                "cpus": os.cpu_count(), "cpu_model": cpu, "python": platform.python_version(),
                "platform": platform.platform(), "summary": f"{os.cpu_count()} × {cpu}, Python {platform.python_version()}",
            },
            "load_generator": tool,
            "pinning": pin,
            "setup": (
                f"{pin[0].upper() + pin[1:]}. Load: {tool}, closed loop, 1 thread. chatbridge: `chatbridge serve "
                "--no-access-log` with LOG_LEVEL=WARNING (uvloop, httptools), one worker unless stated. LiteLLM: "
                "`litellm --config` with LITELLM_LOG=WARNING, one worker. Upstream: tests/upstreams emulators "
                "(fixed answer; streams of N chunks)."
            ),
            "chatbridge": {"version": _version(), "commit": self.after.commit if self.after is not None else _git_commit()},
            "before": None if self.before is None else {"spec": self.before.spec, "commit": self.before.commit},
            "after": None if self.after is None else {"spec": self.after.spec, "commit": self.after.commit},
        }

    def standing_notes(self, doc: dict[str, Any]) -> list[str]:
        notes = []
        tp = doc.get("throughput", {})
        direct, cb = tp.get("direct", {}).get("64", {}), tp.get("chatbridge", {}).get("64", {})
        if direct.get("rps") and cb.get("rps"):
            verdict = "clearly above" if direct["rps"] > 1.5 * cb["rps"] else "NOT clearly above"
            notes.append(f"Load generator check: the direct path ({direct['rps']:,.0f} req/s at concurrency 64) is "
                         f"{verdict} the gateway ({cb['rps']:,.0f} req/s), so the load generator is "
                         f"{'not ' if verdict == 'clearly above' else 'possibly '}the bottleneck.")
        if self.plan.mode == "quick":
            notes.append(f"Quick mode: 1 run of {self.plan.seconds}s per point and a growth check over "
                         f"{self.plan.growth_requests:,} requests (the full run uses 100,000); figures are indicative.")
        if doc.get("litellm", {}).get("status") != "measured":
            notes.append(f"LiteLLM not measured: {doc.get('litellm', {}).get('note')}")
        return notes


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version() -> str:
    try:
        from chatbridge import __version__

        return __version__
    except ImportError:
        return "?"


def _git_commit(where: Path = procs.ROOT) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def write_results(doc: dict[str, Any], out_dir: Path, *, chart: bool = True) -> dict[str, Path]:
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "latest.json", "md": out_dir / "latest.md", "png": out_dir / "latest.png"}
    _atomic_write(paths["json"], json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    _atomic_write(paths["md"], report.render_markdown(doc))
    if chart:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            say("matplotlib is not installed (pip install -e '.[bench]'): no chart written")
            del paths["png"]
            return paths
        tmp = out_dir / "latest.png.tmp"
        report.render_png(doc, tmp)
        tmp.replace(paths["png"])
    else:
        del paths["png"]
    return paths


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short run (under a minute)")
    parser.add_argument("--skip-litellm", action="store_true", help="do not start LiteLLM's proxy even if installed")
    parser.add_argument("--runs", type=int, default=None, help="repeated runs (default 5; 1 with --quick)")
    parser.add_argument("--seconds", type=int, default=None, help="seconds per measured point")
    parser.add_argument("--workers", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure 1 vs 2 worker processes (default: in full mode)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "aiohttp"), default="auto",
                        help="load generator for non-streamed requests (auto: wrk when installed)")
    parser.add_argument("--only", default=",".join(sorted(PHASES)),
                        help="comma-separated phases to run (for development; partial results)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.{json,md,png} go")
    parser.add_argument("--before", metavar="PATH_OR_REV", default=None,
                        help="also measure another chatbridge in the same run: a checkout's folder, or a git "
                             "revision (checked out into a temporary worktree); each gateway runs its own src/")
    parser.add_argument("--after", metavar="PATH_OR_REV", default=None,
                        help="measure this chatbridge as 'chatbridge' instead of this checkout (with --before: "
                             "two past commits against each other, e.g. one issue's first and last)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.runs is not None:
        plan = replace(plan, runs=max(1, args.runs))
    if args.seconds is not None:
        plan = replace(plan, seconds=max(1, args.seconds))
    if args.workers is not None:
        plan = replace(plan, workers=args.workers)
    if args.loadgen == "wrk" and not load.wrk_path():
        print("wrk is not installed (apt-get install -y wrk); use --loadgen auto or aiohttp", file=sys.stderr)
        return 2
    bench = Bench(plan, skip_litellm=args.skip_litellm, loadgen=args.loadgen, out_dir=args.out, before=args.before,
                  after=args.after)
    if bench.pinned:
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    if bench.loadgen != "wrk":
        say("wrk not found: using the Python aiohttp load generator (apt-get install -y wrk for a cheaper one)")
    say(f"{plan.mode} benchmark: {plan.runs} run(s) × {plan.seconds}s per point; load generator: {bench.loadgen}")
    try:
        doc = bench.run(frozenset(p.strip() for p in args.only.split(",") if p.strip()))
    except KeyboardInterrupt:
        bench.stop_all()
        for extra in (bench.before, bench.after):
            if extra is not None:
                extra.remove()
        print("interrupted", file=sys.stderr)
        return 130
    paths = write_results(doc, args.out)
    print()
    print(report.render_markdown(doc))
    say("wrote " + ", ".join(str(p.relative_to(procs.ROOT)) if p.is_relative_to(procs.ROOT) else str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
