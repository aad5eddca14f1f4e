"""Helpers for chains of async generators.

A wrapper generator that is closed does not close the generator it iterates; without
`closing`, the upstream HTTP response at the bottom of a chain would stay open until the
garbage collector got to it. Every wrapper in the event chain iterates through `closing`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


@contextlib.asynccontextmanager
async def closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
