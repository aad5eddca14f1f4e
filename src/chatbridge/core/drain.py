"""Graceful shutdown of open chat answers: finish within a grace, then end in-band.

uvicorn, on SIGTERM/SIGINT, stops accepting, asks each connection to shut down (the listener
calls `Drain.begin` then) and waits for open responses; when its own timeout passes it cancels
them, and a cancelled stream just stops. The drain gets there first: SHUTDOWN_GRACE_SECONDS
after the shutdown began it cancels the chat requests still open, marked as ended by the
drain, and the chat endpoint turns that cancellation into the dialect's in-band error (or a
503 when nothing was sent yet). Cancelling unwinds the attempt, which releases its pool slot.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("chatbridge.shutdown")

SHUTTING_DOWN = "The gateway is shutting down; the answer was ended at SHUTDOWN_GRACE_SECONDS. Retry the request."


class Drain:
    """The chat requests open in this process (their tasks); `begin` starts the grace, once."""

    __slots__ = ("_ended", "_open", "_timer", "draining", "grace")

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.draining = False
        self._open: set[asyncio.Task[object]] = set()
        self._ended: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def enter(self, task: asyncio.Task[object] | None) -> None:
        """`task` (the request's, which its caller has at hand) is open until `leave`."""
        if task is not None:
            self._open.add(task)

    def leave(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self._open.discard(task)
            self._ended.discard(task)

    def ended(self, task: asyncio.Task[object] | None) -> bool:
        """This request was cancelled by the drain (not by its client leaving or a server forcing)."""
        return task is not None and task in self._ended

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
            self._ended.add(task)
            task.cancel()
