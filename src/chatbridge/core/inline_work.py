"""Keeping heavy request checks off the event loop without paying a thread hop for every request.

The endpoint parses a request on the event loop inside `inline_work()`. A check that would be
slow there (a tool schema nobody has checked before costs about half a millisecond per
property) spends from the budget with `spend_inline`; once the budget is gone it raises
`NeedsWorker`, and the endpoint parses the request again in a worker thread, where nothing is
counted. Cached verdicts cost nothing, so agents resending the same tools stay on the loop.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from types import TracebackType

INLINE_BUDGET = 400  # units of work (schema values) per request on the loop: a few milliseconds


class NeedsWorker(Exception):
    """Raised on the event loop by work too heavy for it: the caller runs it again in a thread."""


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


_budget: ContextVar[_Budget | None] = ContextVar("inline_work_budget", default=None)


class inline_work:  # lower case: called like the function it was, `with inline_work():`
    """Work in this block runs on the event loop: at most `budget` units of it.

    A class, not a `@contextmanager` generator: it is entered by every chat request.
    """

    __slots__ = ("_budget", "_token")

    def __init__(self, budget: int = INLINE_BUDGET) -> None:
        self._budget = budget
        self._token: Token[_Budget | None] | None = None

    def __enter__(self) -> None:
        self._token = _budget.set(_Budget(self._budget))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._token is not None:
            _budget.reset(self._token)
            self._token = None


def spend_inline(units: int) -> None:
    """Account for `units` of heavy work; raises `NeedsWorker` when on the loop and over budget."""
    budget = _budget.get()
    if budget is None:
        return  # in a worker thread (or any caller that did not ask for a budget)
    budget.left -= units
    if budget.left < 0:
        raise NeedsWorker
