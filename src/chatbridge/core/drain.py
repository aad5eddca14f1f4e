"""Open chat answers ended before their time, in-band: at shutdown (after a grace) or when the
client key they came with is revoked.

uvicorn, on SIGTERM/SIGINT, stops accepting, asks each connection to shut down (the listener
calls `Drain.begin` then) and waits for open responses; when its own timeout passes it cancels
them, and a cancelled stream just stops. The drain gets there first: SHUTDOWN_GRACE_SECONDS
after the shutdown began it cancels the chat requests still open, marked as ended by the
drain, and the chat endpoint turns that cancellation into the dialect's in-band error (or a
503 when nothing was sent yet). Cancelling unwinds the attempt, which releases its pool slot.

A revoked key (or one removed from CLIENT_KEYS_FILE) ends its open answers the same way, at once:
a leaked key must stop costing upstream time when it is revoked, not when its streams end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Literal

log = logging.getLogger("chatbridge.shutdown")

SHUTTING_DOWN = "The gateway is shutting down; the answer was ended at SHUTDOWN_GRACE_SECONDS. Retry the request."
KEY_REVOKED = "The client key of this request was revoked; the answer was ended."

Ending = Literal["shutdown", "revoked"]


class Drain:
    """The chat requests open in this process (their tasks), those of revocable keys by key digest;
    `begin` starts the shutdown's grace, once; `end_keys` ends the answers of revoked keys."""

    __slots__ = ("_by_key", "_ended", "_open", "_timer", "draining", "grace")

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.draining = False
        self._open: set[asyncio.Task[object]] = set()
        self._by_key: dict[str, set[asyncio.Task[object]]] = {}
        self._ended: dict[asyncio.Task[object], Ending] = {}
        self._timer: asyncio.TimerHandle | None = None

    def enter(self, task: asyncio.Task[object] | None) -> None:
        """`task` (the request's, which its caller has at hand) is open until `leave`."""
        if task is not None:
            self._open.add(task)

    def leave(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self._open.discard(task)
            self._ended.pop(task, None)

    def ended(self, task: asyncio.Task[object] | None) -> Ending | None:
        """Why this request was cancelled here; None when it was not (its client left, or a server forced it)."""
        return None if task is None else self._ended.get(task)

    def watch_key(self, task: asyncio.Task[object], key: str) -> None:
        """`task` answers with the client key of digest `key`, which may be revoked, until `unwatch_key`."""
        self._by_key.setdefault(key, set()).add(task)

    def unwatch_key(self, task: asyncio.Task[object], key: str) -> None:
        tasks = self._by_key.get(key)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._by_key[key]

    def end_keys(self, keys: Iterable[str]) -> None:
        """These client keys (digests) were revoked: their open answers end now."""
        tasks = [task for key in keys for task in self._by_key.pop(key, ()) if task not in self._ended]
        if tasks:
            log.warning("client key revoked: ending %d open answer(s) made with it", len(tasks))
        for task in tasks:
            self._ended[task] = "revoked"
            task.cancel()

    def begin(self) -> None:
        """The server stopped accepting: open answers have `grace` seconds from now."""
        if self.draining:
            return
        self.draining = True
        if self._open:
            log.info("shutting down: %d open answer(s) may finish within %g s (SHUTDOWN_GRACE_SECONDS)",
                     len(self._open), self.grace)
        self._timer = asyncio.get_running_loop().call_later(self.grace, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if not self._open:
            return
        log.warning("shutting down: ending %d answer(s) still open after %g s (SHUTDOWN_GRACE_SECONDS)",
                    len(self._open), self.grace)
        for task in list(self._open):
            if task not in self._ended:
                self._ended[task] = "shutdown"
                task.cancel()
