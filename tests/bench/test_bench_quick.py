"""The benchmark harness at toy sizes: real processes and requests, no timing asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import load, procs, report, run

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[procs.Service, procs.Service, procs.Service]]:
    work = tmp_path_factory.mktemp("bench")
    emu = procs.openai_emulator("test-emu", None, chunks=20, log_dir=work).start()
    slow = procs.openai_emulator("test-slow", None, chunks=20, delay=0.05, log_dir=work).start()
    gw = procs.gateway("test-gw", None, openai_upstream=emu, work_dir=work, log_dir=work).start()
    try:
        for service in (emu, slow, gw):
            service.wait_ready()
        yield emu, slow, gw
    finally:
        for service in (gw, slow, emu):
            service.stop()


def _measure(service: procs.Service, concurrency: int) -> dict[str, object]:
    cpu = service.cpu_seconds()
    result = load.run_async(load.run_aiohttp(
        service.base_url + run.CHAT, [load.chat_body(procs.MODEL)], load.auth_headers(procs.API_KEY), concurrency, 0.5,
    ))
    cpu = service.cpu_seconds() - cpu
    assert isinstance(result, load.LoadResult)
    assert result.requests > 0 and result.errors == 0 and cpu > 0
    return {**result.as_dict(), "cpu_ms_per_request": 1000 * cpu / result.requests}


def _streams(service: procs.Service) -> dict[str, object]:
    result = load.run_async(load.measure_streams(
        service.base_url + run.CHAT, load.chat_body(procs.MODEL, stream=True), load.auth_headers(procs.API_KEY), 2,
    ))
    assert result.streams == 2 and result.errors == 0
    assert result.chunks >= 20  # role chunk + 20 pieces + finish (+ usage)
    return result.as_dict()  # type: ignore[no-any-return]


def test_harness_pieces_produce_a_complete_report(servers: tuple[procs.Service, ...], tmp_path: Path) -> None:
    emu, _, gw = servers
    raw = {
        "meta": {"mode": "test", "runs": 1, "machine": {"summary": "test"}, "setup": "test",
                 "litellm": {"status": "skipped", "version": None, "note": "not in tests"}},
        "load": {
            "direct": {"1": [_measure(emu, 1)], "64": [_measure(emu, 4)]},
            "chatbridge": {"1": [_measure(gw, 1)], "64": [_measure(gw, 4)]},
        },
        "streams": {"direct": [_streams(emu)], "chatbridge": [_streams(gw)]},
        "overhead_header": load.run_async(load.sample_overhead_header(
            gw.base_url + run.CHAT, load.chat_body(procs.MODEL), load.auth_headers(procs.API_KEY), 5)),
        "memory": {"streams": 10, "opened": 10, "rss_before_kib": 1000, "rss_during_kib": 1200, "kib_per_stream": 20.0},
        "growth": {"requests": 100, "warmup_requests": 10, "mix": "test", "series": [[0, 1000], [50, 1010], [100, 1010]],
                   "total_growth_kib": 10, "late_growth_kib": 0, "late_from_requests": 50},
        "workers": None,
        "floor": _floor(emu, work=tmp_path),
    }
    assert len(raw["overhead_header"]) == 5  # every answer carries x-chatbridge-overhead-ms

    doc = report.summarise(raw)
    json.dumps(doc)  # serialisable as written to latest.json
    assert doc["schema"] == report.SCHEMA
    assert set(doc) >= {"throughput", "streams", "ratios", "overhead_header_ms", "memory", "growth", "targets"}
    row = doc["throughput"]["chatbridge"]["1"]
    assert row["rps"] > 0 and row["p50_ms"] > 0 and len(row["runs"]) == 1
    assert doc["ratios"]["chatbridge"]["rps_vs_direct_c64"] > 0
    assert doc["ratios"]["chatbridge"]["added_p50_ms_c1"] is not None
    assert doc["streams"]["chatbridge"]["ttfc_ms"] > 0
    targets = {t["name"]: t for t in doc["targets"]}
    assert len(targets) == 7  # issue 15 added streamed throughput vs direct and time to first chunk added
    assert all(set(t) == {"name", "goal", "measured", "shown", "pass", "note"} for t in targets.values())
    floor = doc["floor"]
    assert floor["uvicorn_cpu_ms"] > 0 and floor["aiohttp_client_cpu_ms"] > 0
    assert floor["floor_cpu_ms"] == pytest.approx(floor["uvicorn_cpu_ms"] + floor["aiohttp_client_cpu_ms"])
    assert floor["ceiling_vs_direct"] > 0 and "chatbridge_own_cpu_ms" in floor
    vs_direct = next(t for t in doc["targets"] if "vs direct" in t["name"])
    assert "uvicorn + aiohttp alone" in vs_direct["note"]
    vs_litellm = next(t for t in doc["targets"] if "LiteLLM" in t["name"])
    assert vs_litellm["pass"] is None and "not in tests" in vs_litellm["note"]

    has_matplotlib = importlib.util.find_spec("matplotlib") is not None  # the `bench` extra
    paths = run.write_results(doc, tmp_path, chart=has_matplotlib)
    markdown = paths["md"].read_text()
    assert "| target | goal | measured | verdict | note |" in markdown
    assert "chatbridge → emulator" in markdown and "## Streams" in markdown and "## Where the CPU goes" in markdown
    assert json.loads(paths["json"].read_text())["schema"] == report.SCHEMA
    if has_matplotlib:
        assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _floor(emu: procs.Service, work: Path) -> dict[str, list[dict[str, object]]]:
    """bench/floor.py for real: uvicorn with a constant answer, aiohttp's client alone."""
    server = procs.floor_server("test-floor", None, log_dir=work).start()
    try:
        server.wait_ready()
        served = _measure(server, 4)
    finally:
        server.stop()
    client = procs.floor_client(emu.base_url + run.CHAT, None, concurrency=4, seconds=0.5)
    assert client["requests"] > 0 and client["errors"] == 0 and client["cpu_ms_per_request"] > 0  # type: ignore[operator]
    return {"server": [served], "client": [client]}


@pytest.mark.skipif(not procs.can_pin(), reason="needs CPUs 0 and 1 and taskset")
def test_children_are_pinned_even_after_the_harness_pins_itself(tmp_path: Path) -> None:
    import os

    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1})  # what bench.run does to itself before starting anything
    try:
        emu = procs.openai_emulator("test-pinned", "0", log_dir=tmp_path).start()
        try:
            emu.wait_ready()  # raises if the emulator is not on CPU 0
            assert {p.cpu_affinity()[0] for p in emu.processes()} == {0}  # type: ignore[attr-defined]
        finally:
            emu.stop()
    finally:
        os.sched_setaffinity(0, mine)


def test_hold_streams_keeps_them_open(servers: tuple[procs.Service, ...]) -> None:
    _, slow, _ = servers
    seen: list[int] = []

    async def while_open(opened: int) -> int:
        seen.append(opened)
        return 7

    opened, result = load.run_async(load.hold_streams(
        slow.base_url + run.CHAT, load.chat_body(procs.MODEL, stream=True), {}, 20, while_open, open_timeout=10))
    assert opened == 20 and seen == [20] and result == 7


@pytest.mark.skipif(load.wrk_path() is None, reason="wrk is not installed")
def test_wrk_load(servers: tuple[procs.Service, ...]) -> None:
    emu, _, _ = servers
    result = load.run_wrk(emu.base_url + run.CHAT, [load.chat_body(procs.MODEL)], load.auth_headers(procs.API_KEY), 2, 1, None)
    assert result.requests > 0 and result.errors == 0 and result.tool == "wrk"


def test_event_counter_counts_events_split_anywhere() -> None:
    stream = b"".join(b'data: {"n":%d}\n\n' % i for i in range(5)) + b"data: [DONE]\n\n"
    for cut in range(len(stream) + 1):
        counter = load._EventCounter()
        counter.feed(stream[:cut])
        counter.feed(stream[cut:])
        assert (counter.count, counter.done) == (5, True), cut


def _fake_venv(root: Path, version: str, pth: str | None = None) -> Path:
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "litellm").write_text("#!/bin/sh\n")
    site = venv / "lib" / "python3.11" / "site-packages"
    (site / f"litellm-{version}.dist-info").mkdir(parents=True)
    if pth:
        (site / pth).write_text("import os\n")
    return venv


def test_litellm_checks_refuse_unexpected_pth_and_bad_versions(tmp_path: Path) -> None:
    assert procs.litellm_status(tmp_path / "absent")[0] is False
    assert procs.litellm_status(_fake_venv(tmp_path / "ok", "1.106.2")) == (True, "1.106.2")
    ok, why = procs.litellm_status(_fake_venv(tmp_path / "pth", "1.106.2", "litellm_init.pth"))
    assert not ok and "litellm_init.pth" in why
    ok, why = procs.litellm_status(_fake_venv(tmp_path / "bad", "1.107.1"))
    assert not ok and "compromised" in why


@pytest.mark.parametrize("version", ["1.82.7", "1.82.8", "1.107.0", "1.107.3"])
def test_install_script_refuses_compromised_versions(version: str, tmp_path: Path) -> None:
    script = Path(procs.ROOT) / "bench" / "install_litellm.sh"
    out = subprocess.run(
        ["bash", str(script)], env={**procs.clean_env(), "LITELLM_VERSION": version, "LITELLM_VENV": str(tmp_path / "v")},
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert out.returncode == 2 and "compromised" in out.stderr
    assert not (tmp_path / "v").exists()


@pytest.mark.timeout(150)  # four processes and sixteen 1 s points, on a loaded machine
def test_the_redis_phase_measures_both_stores_and_both_gateways(tmp_path: Path) -> None:
    """bench/redis_state.py for real at toy sizes: its own redis-server, an embedded and a Redis gateway."""
    from bench import redis_state

    if redis_state.available() is not None:
        pytest.skip(str(redis_state.available()))
    logs = tmp_path / "logs"
    logs.mkdir()
    result = redis_state.measure(server_cpu=None, client_cpu=None, seconds=1, warmup=1, runs=1, ops=50,
                                 work=tmp_path, logs=logs, tool="aiohttp")
    for store in ("embedded", "redis"):
        assert set(result["operations"][store]) == set(redis_state.OPERATIONS)
        assert all(row["p50_us"] > 0 for row in result["operations"][store].values())
        for model in ("openai-compat", "k2think"):
            for c in ("1", "16"):
                row = result["requests"]["rows"][store][model][c]
                assert row["rps"] > 0 and row["errors"] == 0
    assert set(result["requests"]["added"]) == {"openai-compat", "k2think"}
    assert set(result["requests"]["redis_commands_per_request"]) == {"openai-compat", "k2think"}
    assert not result["requests"]["state_store_log_lines"]  # the Redis gateway never lost its store
    text = "\n".join(redis_state.render_markdown(result))
    assert "State store: Redis vs embedded" in text and "| claim_slot |" in text and "| k2think | 16 |" in text


def _row(rps: float, p50: float = 1.0) -> dict[str, object]:
    return {"requests": 100, "seconds": 1.0, "rps": rps, "p50_ms": p50, "p99_ms": p50 * 2, "errors": 0,
            "tool": "test", "cpu_ms_per_request": 0.1}


def test_report_gives_streamed_ratios_and_before_and_after_from_one_run() -> None:
    """Ratios to direct and to the minimal proxy, streamed and not, and after/before, per concurrency."""
    levels = [str(c) for c in report.CONCURRENCY]
    rps = {"direct": 1000.0, "floor-proxy": 800.0, "chatbridge": 600.0, "before": 400.0}
    raw = {
        "meta": {"mode": "test", "runs": 1, "machine": {"summary": "test"}, "setup": "test",
                 "before": {"spec": "HEAD~1", "commit": "abc1234"}},
        "load": {name: {c: [_row(value)] for c in levels} for name, value in rps.items()},
        "stream_load": {name: {c: [_row(value / 10)] for c in levels} for name, value in rps.items()},
        "streams": {"direct": [{"ttfc_ms": 1.0, "chunks_per_s": 1000.0, "chunks": 10, "errors": 0}],
                    "chatbridge": [{"ttfc_ms": 1.5, "chunks_per_s": 600.0, "chunks": 10, "errors": 0}],
                    "before": [{"ttfc_ms": 2.0, "chunks_per_s": 400.0, "chunks": 10, "errors": 0}]},
    }
    doc = report.summarise(raw)
    mine = doc["ratios"]["chatbridge"]
    assert mine["rps_vs_direct_c32"] == pytest.approx(0.6) and mine["rps_vs_floor_c64"] == pytest.approx(0.75)
    assert mine["stream_rps_vs_direct_c8"] == pytest.approx(0.6) and mine["stream_rps_vs_floor_c1"] == pytest.approx(0.75)
    after = doc["ratios"]["chatbridge_vs_before"]
    assert after["rps_c64"] == pytest.approx(1.5) and after["stream_rps_c32"] == pytest.approx(1.5)
    assert after["ttfc_ms_diff"] == pytest.approx(-0.5)
    targets = {t["name"]: t for t in doc["targets"]}
    streamed = next(t for name, t in targets.items() if name.startswith("streamed throughput"))
    assert streamed["measured"] == pytest.approx(0.6) and streamed["pass"] is True
    ttfc = next(t for name, t in targets.items() if name.startswith("time to first chunk"))
    assert ttfc["measured"] == pytest.approx(0.5) and ttfc["pass"] is True
    markdown = report.render_markdown(doc)
    assert "## Streamed requests under load" in markdown and "## Before and after (same run)" in markdown
    assert "| 64 | 1.50× | 1.50× |" in markdown and "`--before HEAD~1` (abc1234)" in markdown


def test_before_accepts_a_checkout_folder_or_a_revision(tmp_path: Path) -> None:
    """`--before PATH_OR_REV`: a folder is used as it is; a revision gets a worktree, removed afterwards."""
    folder = run.checkout(str(procs.ROOT), tmp_path)
    assert folder.src == procs.ROOT / "src" and folder.worktree is None
    if run._git_commit() is None:
        pytest.skip("not a git checkout: no revision to check out")
    revision = run.checkout("HEAD", tmp_path)
    try:
        assert revision.worktree is not None and (revision.src / "chatbridge" / "__init__.py").is_file()
        assert revision.commit == run._git_commit()
    finally:
        revision.remove()
    assert not (tmp_path / "before-checkout").exists()
    with pytest.raises(SystemExit, match="neither a chatbridge checkout nor a revision"):
        run.checkout("no-such-revision-or-folder", tmp_path)
    with pytest.raises(SystemExit, match="--after no-such"):  # the option it came from is named
        run.checkout("no-such", tmp_path, "after")
    assert run.parse_args(["--after", "HEAD~1", "--before", "HEAD~2"]).after == "HEAD~1"
