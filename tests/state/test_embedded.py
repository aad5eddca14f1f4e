"""EmbeddedStore keeps durable keys in one file: what it writes, what it reads back, and when it writes."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from chatbridge.state import STATE_FILE_NAME, EmbeddedStore, embedded
from chatbridge.state.memory import Entry
from tests.state.helpers import FakeClock, run


def read(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def test_durable_keys_survive_a_reopen_with_their_remaining_ttl(tmp_path: Path) -> None:
    path, clock = tmp_path / STATE_FILE_NAME, FakeClock(1000.0)

    async def before(store: EmbeddedStore) -> None:
        await store.namespace("pool").set("kimi", {"credentials": {"c1": {"disabled": True}}})
        await store.namespace("sessions").set("alice", {"conversation": "c1"}, ttl=100)
        await store.namespace("usage").incr("alice", 42)
        await store.namespace("slots", durable=False).set("c1", {"owner": "r1"}, ttl=30)
        await store.namespace("rate", durable=False).incr("key1", ttl=60)
        await store.set("short", 1, ttl=5)
        await store.set("gone", 1)
        await store.delete("gone")

    run(EmbeddedStore(path, clock=clock), before)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    saved = read(path)
    assert saved["version"] == 2
    assert saved["keys"]["sessions:alice"] == {"value": {"conversation": "c1"}, "expires_at": 1100.0}
    assert saved["keys"]["pool:kimi"] == {"value": {"credentials": {"c1": {"disabled": True}}}}
    assert sorted(saved["keys"]) == ["pool:kimi", "sessions:alice", "short", "usage:alice"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []

    clock.advance(60)  # the gateway is down for a minute

    async def after(store: EmbeddedStore) -> None:
        assert await store.keys("") == ["pool:kimi", "sessions:alice", "usage:alice"]
        assert await store.namespace("usage").incr("alice") == 43
        assert await store.namespace("slots", durable=False).get("c1") is None
        clock.advance(39.9)
        assert await store.namespace("sessions").get("alice") == {"conversation": "c1"}
        clock.advance(0.1)  # 100 seconds after it was set, downtime included
        assert await store.namespace("sessions").get("alice") is None

    run(EmbeddedStore(path, clock=clock), after)


def test_a_version_1_pool_state_file_is_read_as_pool_keys(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    health = {"credentials": {"abc": {"disabled": True, "failures": 0}}, "refresh": {"last": 5.0}}
    path.write_bytes(orjson.dumps({"version": 1, "providers": {"k2think": health, "kimi": {}, "bad": "not a dict"}}))

    async def scenario(store: EmbeddedStore) -> None:
        pool = store.namespace("pool")
        assert await pool.keys() == ["k2think", "kimi"]
        assert await pool.get("k2think") == health
        await pool.set("kimi", {"credentials": {}})

    run(EmbeddedStore(path), scenario)
    assert read(path) == {"version": 2, "keys": {"pool:k2think": {"value": health}, "pool:kimi": {"value": {"credentials": {}}}}}


def test_an_unchanged_store_does_not_rewrite_the_file(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    path.write_bytes(orjson.dumps({"version": 1, "providers": {"p": {}}}))
    before = path.read_bytes()

    async def scenario(store: EmbeddedStore) -> None:
        assert await store.get("pool:p") == {}
        await store.namespace("slots", durable=False).set("c1", 1)  # nothing durable changed
        await store.flush()

    run(EmbeddedStore(path), scenario)
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b"{not json", b"", b"[]", b'"text"', b'{"version": 99, "keys": {}}',
                                     b'{"version": 2, "keys": []}', b'{"version": 1, "providers": []}', b"\xff\xfe"])
def test_an_unreadable_file_is_logged_and_empty_and_then_replaced(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / STATE_FILE_NAME
    path.write_bytes(content)

    async def scenario(store: EmbeddedStore) -> None:
        assert await store.keys("") == []
        await store.set("pool:p", {"credentials": {}})

    run(EmbeddedStore(path), scenario)
    assert "starting with empty state" in caplog.text
    assert read(path)["keys"] == {"pool:p": {"value": {"credentials": {}}}}


def test_malformed_records_are_skipped_and_the_rest_is_kept(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    clock = FakeClock(1000.0)
    records = {
        "good": {"value": [1]}, "ttl": {"value": 2, "expires_at": 1500},
        "expired": {"value": 3, "expires_at": 999.0}, "no-value": {"expires_at": 2000.0},
        "null": {"value": None}, "bad-expiry": {"value": 4, "expires_at": "soon"},
        "bool-expiry": {"value": 5, "expires_at": True}, "not-a-record": [1, 2],
    }
    path.write_bytes(orjson.dumps({"version": 2, "keys": records}))

    async def scenario(store: EmbeddedStore) -> None:
        assert await store.keys("") == ["good", "ttl"]
        clock.advance(500)
        assert await store.keys("") == ["good"]

    run(EmbeddedStore(path, clock=clock), scenario)


def test_a_missing_file_and_folder_are_empty_and_created_on_write(tmp_path: Path) -> None:
    path = tmp_path / "data" / "deeper" / STATE_FILE_NAME

    async def scenario(store: EmbeddedStore) -> None:
        assert await store.keys("") == []
        await store.set("k", 1)

    run(EmbeddedStore(path), scenario)
    assert read(path)["keys"] == {"k": {"value": 1}}


class RecordingWrites:
    """Stands in for `write_snapshot`: records each write (and can be slow), then really writes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, slow: float = 0.0, slow_call: int = 1, each: float = 0.0) -> None:
        self.real = embedded.write_snapshot
        self.slow, self.slow_call, self.each = slow, slow_call, each
        self.lock = threading.Lock()
        self.started: list[float] = []
        self.values: list[Any] = []
        self.running = 0
        self.most_at_once = 0
        self.slow_started = threading.Event()
        monkeypatch.setattr(embedded, "write_snapshot", self)

    def __call__(self, path: Path, entries: dict[str, Entry], volatile: tuple[str, ...], now: float) -> None:
        with self.lock:
            self.started.append(time.monotonic())
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            is_slow = len(self.started) == self.slow_call
        if is_slow:
            self.slow_started.set()
        time.sleep(self.slow if is_slow else self.each)
        with self.lock:
            self.running -= 1
            self.real(path, entries, volatile, now)
            self.values.append(orjson.loads(entries["v"][0]) if "v" in entries else None)  # in the order they landed


def test_writes_are_debounced_and_happen_without_a_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = RecordingWrites(monkeypatch)
    path, interval = tmp_path / STATE_FILE_NAME, 0.2

    async def scenario(store: EmbeddedStore) -> float:
        started = time.monotonic()
        for i in range(50):
            await store.set("v", i)
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 5
        while writes.values[-1:] != [49] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert read(path)["keys"]["v"] == {"value": 49}  # written by the timer, not by a flush
        return elapsed

    elapsed = run(EmbeddedStore(path, flush_interval=interval), scenario)
    gaps = [b - a for a, b in zip(writes.started, writes.started[1:], strict=False)]
    assert 2 <= len(writes.started) <= elapsed / interval + 2, (elapsed, writes.started)
    assert min(gaps) >= interval * 0.95, gaps  # at most one write per flush_interval


def test_writes_never_overlap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = RecordingWrites(monkeypatch, each=0.02)

    async def scenario(store: EmbeddedStore) -> None:
        async def change_and_flush(i: int) -> None:
            await store.set("v", i)
            await store.flush()

        await asyncio.gather(*(change_and_flush(i) for i in range(10)))
        assert await store.get("v") == 9

    run(EmbeddedStore(tmp_path / STATE_FILE_NAME, flush_interval=0.0), scenario)
    assert writes.most_at_once == 1 and writes.values[-1] == 9


def test_the_last_flush_at_shutdown_is_the_newest_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write still running in a thread at shutdown never lands after (over) the final one."""
    writes = RecordingWrites(monkeypatch, slow=0.3)
    path = tmp_path / STATE_FILE_NAME

    async def scenario(store: EmbeddedStore) -> None:
        await store.set("v", 1)  # the timer's write of this is slow
        while not writes.slow_started.is_set():
            await asyncio.sleep(0.005)
        await store.set("v", 2)  # newer than what the slow write is writing

    run(EmbeddedStore(path, flush_interval=0.01), scenario)
    assert writes.values[-1] == 2 and read(path)["keys"]["v"] == {"value": 2}
    assert writes.most_at_once == 1


def test_a_cancelled_flush_still_lands_before_the_next_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = RecordingWrites(monkeypatch, slow=0.3, slow_call=2)
    path = tmp_path / STATE_FILE_NAME

    async def scenario(store: EmbeddedStore) -> None:
        await store.set("v", 0)
        await store.flush()  # the first write; the next timer is a minute away
        await asyncio.sleep(0.05)  # the timer of that change finds nothing left to write
        await store.set("v", 1)
        flush = asyncio.ensure_future(store.flush())
        while not writes.slow_started.is_set():
            await asyncio.sleep(0.005)
        flush.cancel()  # its write goes on in the thread
        await store.set("v", 2)
        await store.flush()
        assert writes.values == [0, 1, 2] and read(path)["keys"]["v"] == {"value": 2}

    run(EmbeddedStore(path, flush_interval=60), scenario)
    assert writes.most_at_once == 1
