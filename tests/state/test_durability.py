"""Nothing stored is lost or half-written: a write killed mid-way, a full disk, several workers.

Crashes are real: a child process is SIGKILLed while it is inside `fsync`, the moment a
half-written file would be on disk if the write were not atomic.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from chatbridge.state import STATE_FILE_NAME, EmbeddedStore
from tests.state.helpers import child_env, kill_inside_fsync, run


def leftovers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".tmp"))


def write_state(path: Path, **values: object) -> bytes:
    async def scenario(store: EmbeddedStore) -> None:
        for key, value in values.items():
            await store.set(key, value)

    run(EmbeddedStore(path), scenario)
    return path.read_bytes()


def test_a_write_killed_mid_way_leaves_the_previous_file_and_the_next_open_removes_its_leftover(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    before = write_state(path, **{"pool:p": {"credentials": {"abc": {"disabled": True, "failures": 0}}}})
    code = textwrap.dedent(f"""
        import asyncio
        from chatbridge.state import EmbeddedStore
        async def main():
            async with EmbeddedStore(Path({str(path)!r})) as store:
                await store.set("pool:p", {{"credentials": {{}}}})
                await store.flush()
        asyncio.run(main())
    """)
    kill_inside_fsync(tmp_path, 1, code)

    assert path.read_bytes() == before
    [leftover] = leftovers(tmp_path)
    assert leftover.name.startswith(f".{STATE_FILE_NAME}.")  # fresh: only ownership says it is stale

    async def scenario(store: EmbeddedStore) -> None:
        assert await store.get("pool:p") == {"credentials": {"abc": {"disabled": True, "failures": 0}}}

    run(EmbeddedStore(path), scenario)
    assert leftovers(tmp_path) == []


_HOLD_LOCK = textwrap.dedent("""
    import sys
    from pathlib import Path
    from chatbridge.state.files import writer_lock
    with writer_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.read()
""")


def test_a_leftover_is_kept_while_another_process_holds_the_writer_lock(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    before = write_state(path, k=1)
    in_flight = tmp_path / f".{STATE_FILE_NAME}.another-worker.tmp"
    in_flight.write_text("another worker is writing this right now")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)], env=child_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        EmbeddedStore(path)
        assert in_flight.exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    EmbeddedStore(path)
    assert not in_flight.exists()
    assert path.read_bytes() == before


def _full_disk(fd: int) -> None:
    raise OSError(28, "No space left on device")


def test_a_failed_write_keeps_the_previous_file_and_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / STATE_FILE_NAME
    before = write_state(path, **{"pool:p": {"credentials": {"abc": {"failures": 2}}}})

    async def scenario(store: EmbeddedStore) -> None:
        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", _full_disk)
            await store.set("pool:p", {"credentials": {}})
            with pytest.raises(OSError, match="No space left"):
                await store.flush()
            assert path.read_bytes() == before
            assert leftovers(tmp_path) == []
            assert await store.get("pool:p") == {"credentials": {}}  # still held in memory
        await store.flush()  # the disk has room again: retried
        assert orjson.loads(path.read_bytes())["keys"]["pool:p"] == {"value": {"credentials": {}}}

    run(EmbeddedStore(path, flush_interval=60), scenario)
    assert "could not write the state file" in caplog.text


def test_a_failed_timed_write_is_retried_at_the_next_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / STATE_FILE_NAME

    async def scenario(store: EmbeddedStore) -> None:
        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", _full_disk)
            await store.set("k", 1)
            await asyncio.sleep(0.15)  # the timer's write has failed by now, maybe more than once
            assert not path.exists() and leftovers(tmp_path) == []
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # no new change and no flush() call: the store retries by itself
        assert orjson.loads(path.read_bytes())["keys"] == {"k": {"value": 1}}

    run(EmbeddedStore(path, flush_interval=0.05), scenario)


def test_closing_on_a_full_disk_is_logged_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / STATE_FILE_NAME
    before = write_state(path, k=1)

    async def scenario(store: EmbeddedStore) -> None:
        await store.set("k", 2)
        monkeypatch.setattr(os, "fsync", _full_disk)

    run(EmbeddedStore(path, flush_interval=60), scenario)
    assert path.read_bytes() == before
    assert "closed with 1 change(s) not written" in caplog.text


_WORKER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from chatbridge.state import EmbeddedStore
    path, name = Path(sys.argv[1]), sys.argv[2]
    async def main():
        async with EmbeddedStore(path, flush_interval=60) as store:
            for i in range(30):
                for j in range(20):
                    await store.set(f"{name}:{j}", {"round": i, "padding": "x" * 200})
                await store.flush()
    asyncio.run(main())
""")


def assert_complete(keys: dict[str, Any]) -> dict[str, int]:
    """Every worker's keys in the file come from one round of that worker: no write was torn."""
    rounds: dict[str, int] = {}
    for writer in {key.split(":")[0] for key in keys}:
        [rounds[writer]] = {keys[f"{writer}:{j}"]["value"]["round"] for j in range(20)}
    assert len(keys) == 20 * len(rounds), sorted(keys)
    return rounds


def test_workers_sharing_the_file_never_expose_a_partial_one_and_the_last_writer_wins(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    write_state(path, **{f"orig:{j}": {"round": 0} for j in range(20)})
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(path), name], env=child_env()) for name in ("a", "b")]
    reads = 0
    try:
        while any(w.poll() is None for w in workers):
            assert_complete(orjson.loads(path.read_bytes())["keys"])
            reads += 1
    finally:
        for worker in workers:
            worker.wait(timeout=60)
    assert [w.returncode for w in workers] == [0, 0]
    rounds = assert_complete(orjson.loads(path.read_bytes())["keys"])
    assert reads > 10 and 29 in {rounds.get("a"), rounds.get("b")}  # the last writer's final state
    assert leftovers(tmp_path) == []
