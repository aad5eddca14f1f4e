"""`EmbeddedStore`: the state store in memory, its durable keys kept in one JSON file under DATA_DIR.

The file (`pool-state.json`, mode 0600), format version 2::

    {
      "keys": {
        "pool:example": {"value": {...}},
        "sessions:alice": {"expires_at": 1767225600.25, "value": {...}}
      },
      "version": 2
    }

`expires_at` is absolute wall-clock time, so a TTL keeps running while the gateway is down.
Keys under a `durable=False` namespace are never written. A version-1 file (`{"version": 1,
"providers": {name: state}}`, the pool store's) is read as keys `pool:{name}`.

Writes are debounced: a change schedules one write, at most one per `flush_interval`, run in
a thread; writes never overlap, and each writes the state as of its start. `flush()` writes
at once and waits; `aclose()` waits for a write still in its thread, then writes the final
state. A failed write (disk full) leaves the previous file, is logged and is retried at the
next flush; the data stays in memory meanwhile.

Several worker processes may share one file: each writes everything it holds, and the last
writer wins, as with the pool store before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from chatbridge.state.base import StoreState, StoreStatus, encode
from chatbridge.state.files import remove_stale_temp_files, write_locked
from chatbridge.state.memory import Entry, MemoryStore

log = logging.getLogger("chatbridge.state.embedded")

STATE_FILE_NAME = "pool-state.json"
FORMAT_VERSION = 2


class EmbeddedStore(MemoryStore):
    """A `MemoryStore` whose durable keys are written to `path`.

    The file is read, and a killed write's leftovers removed, when the store is made (at
    startup, before serving). `clock` is wall-clock seconds, for TTLs; the debounce uses
    `time.monotonic()`.
    """

    def __init__(self, path: Path, *, flush_interval: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self.path = path
        self.flush_interval = flush_interval
        self._volatile: tuple[str, ...] = ()  # prefixes of keys never written
        self._changes = 0  # durable writes so far
        self._saved = 0  # how many of them the file holds
        self._write_lock = asyncio.Lock()
        self._writing: asyncio.Future[None] | None = None  # the write in a thread, even if its waiter left
        self._timer: asyncio.Task[None] | None = None
        self._last_write = -math.inf  # time.monotonic() at the start of the last write
        self._errors = 0  # failed writes of the file
        self._last_error: str | None = None
        remove_stale_temp_files(path)
        self._load(read_state_file(path, clock()))

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.path)!r}, keys={len(self._data)}, state={self.state.name})"

    def status(self) -> StoreStatus:
        """Always up (it answers from memory); `errors` counts failed writes of the file, `last_error`
        is set until a write succeeds again."""
        return StoreStatus(backend="embedded", up=True, errors=self._errors, last_error=self._last_error)

    def _declare_volatile(self, prefix: str) -> None:
        if not prefix.startswith(self._volatile):
            self._volatile = (*self._volatile, prefix)

    def _changed(self, key: str) -> None:
        if key.startswith(self._volatile):
            return
        self._changes += 1
        self._schedule()

    def _schedule(self) -> None:
        if self.state is StoreState.OPEN and (self._timer is None or self._timer.done()):
            delay = max(0.0, self._last_write + self.flush_interval - time.monotonic())
            self._timer = asyncio.get_running_loop().create_task(self._write_later(delay), name="state-flush")

    async def _write_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timer = None  # changes from now on schedule the next write
        with contextlib.suppress(OSError):  # logged; the data is still here
            await self._write()
        if self._changes != self._saved:
            self._schedule()  # the write failed: try again in flush_interval

    async def _flush(self) -> None:
        await self._write()

    async def _aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        try:
            await self._write()
        except OSError:
            log.error("state store closed with %d change(s) not written to %s", self._changes - self._saved, self.path)
        await super()._aclose()

    async def _write(self) -> None:
        """Write the durable keys now, after any write still running; raises (and logs) OSError."""
        async with self._write_lock:
            if self._writing is not None:
                with contextlib.suppress(Exception):
                    await self._writing
                self._writing = None
            if self._changes == self._saved:
                return
            changes, entries = self._changes, dict(self._data)
            self._last_write = time.monotonic()
            self._writing = asyncio.ensure_future(
                asyncio.to_thread(write_snapshot, self.path, entries, self._volatile, self._clock()))
            try:
                await asyncio.shield(self._writing)
            except OSError as exc:
                log.error("could not write the state file %s (keeping the previous one): %s", self.path, exc)
                self._errors += 1
                self._last_error = f"could not write {self.path.name}: {exc.strerror or type(exc).__name__}"
                raise
            finally:
                if self._writing.done():
                    self._writing = None
            self._saved = max(self._saved, changes)
            self._last_error = None


# -- the file -----------------------------------------------------------------------------------------

def write_snapshot(path: Path, entries: dict[str, Entry], volatile: tuple[str, ...], now: float) -> None:
    """Render the live durable `entries` as the state file and replace it (runs in a thread)."""
    keys: dict[str, dict[str, Any]] = {}
    for key, (raw, expires_at) in entries.items():
        if key.startswith(volatile) or (expires_at is not None and expires_at <= now):
            continue
        record: dict[str, Any] = {"value": orjson.Fragment(raw)}
        if expires_at is not None:
            record["expires_at"] = expires_at
        keys[key] = record
    data = orjson.dumps({"version": FORMAT_VERSION, "keys": keys}, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    write_locked(path, data + b"\n")


def read_state_file(path: Path, now: float) -> dict[str, Entry]:
    """The live keys saved in `path`; a missing file is empty, an unreadable one is logged and empty."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("state file %s is unreadable (%s); starting with empty state", path, exc)
        return {}
    version = data.get("version") if isinstance(data, dict) else None
    if version == 1 and isinstance(data.get("providers"), dict):
        return {f"pool:{name}": (encode(state), None) for name, state in data["providers"].items() if isinstance(state, dict)}
    if version == FORMAT_VERSION and isinstance(data.get("keys"), dict):
        return _read_keys(data["keys"], now)
    log.warning("state file %s has no state this version can read (version %r); starting with empty state", path, version)
    return {}


def _read_keys(records: dict[str, Any], now: float) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for key, record in records.items():
        if not isinstance(record, dict) or record.get("value") is None:
            continue
        expires_at = record.get("expires_at")
        if expires_at is not None and (isinstance(expires_at, bool) or not isinstance(expires_at, int | float)):
            continue
        if expires_at is None or expires_at > now:
            entries[key] = (encode(record["value"]), expires_at)
    return entries
