"""Where pool health lives between restarts: a small interface and its embedded backends.

A provider's state is one JSON-able dict (credential health keyed by credential id, plus the
refresher's bookkeeping). `JsonFileStore` keeps every provider in one file under DATA_DIR,
written atomically; a Redis backend shared by replicas can implement the same two methods.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import orjson

from chatbridge.state.keys import write_private_file

log = logging.getLogger("chatbridge.pool.store")

STATE_FILE_NAME = "pool-state.json"
_FORMAT_VERSION = 1
LEFTOVER_AGE = 60.0  # seconds; a save takes milliseconds, so an older temporary file is a crash's


class StateStore(Protocol):
    """Persistence of one provider's pool state. `save` may block: call it off the loop."""

    def load(self, provider: str) -> dict[str, Any]: ...

    def save(self, provider: str, state: dict[str, Any]) -> None: ...


class MemoryStore:
    """Keeps state for the life of the process only (tests, or no DATA_DIR)."""

    def __init__(self) -> None:
        self._states: dict[str, dict[str, Any]] = {}

    def load(self, provider: str) -> dict[str, Any]:
        return dict(self._states.get(provider, {}))

    def save(self, provider: str, state: dict[str, Any]) -> None:
        self._states[provider] = dict(state)


class JsonFileStore:
    """All providers' state in one JSON file, replaced atomically on every save (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._clean_leftovers()
        self._states: dict[str, dict[str, Any]] = self._read()

    def _clean_leftovers(self) -> None:
        """Temporary files of a save that crashed; only old ones, since another worker may be saving now."""
        cutoff = time.time() - LEFTOVER_AGE
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    log.info("removed a leftover temporary file %s", leftover.name)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("pool state %s is unreadable (%s); starting with fresh health", self.path, exc)
            return {}
        providers = data.get("providers") if isinstance(data, dict) else None
        if not isinstance(providers, dict):
            return {}
        return {name: state for name, state in providers.items() if isinstance(state, dict)}

    def load(self, provider: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._states.get(provider, {}))

    def save(self, provider: str, state: dict[str, Any]) -> None:
        with self._lock:
            self._states[provider] = state
            payload = {"version": _FORMAT_VERSION, "providers": self._states}
            text = orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
            write_private_file(self.path, text + "\n")
