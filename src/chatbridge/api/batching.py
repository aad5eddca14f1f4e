"""Ready events in batches: all that an async iterator gives without waiting, handed over at once.

An upstream delivers a streamed answer a few events per read, and what follows costs per
piece: an async generator step, an encoder call, an ASGI `send` (1–2 µs each in uvicorn).
`ready_batches` steps the iterator's `__anext__` awaitable by hand. A step that completes
without suspending is an item that is ready. When a step would suspend, what was collected is
handed over first (so nothing that is ready waits for the upstream: time to first token cannot
grow), and then that same step is finished by passing what it yields to the task and what the
task throws (cancellation) back into it, the `yield from` that `await` would have done.

A consumer may close the batches while a step is suspended and not yet finished (the client
left while its last batch was being sent). The step is then cancelled, not closed: Python 3.11
answers `close()` on a coroutine that awaits an async generator's `__anext__` by marking that
step closed without entering the generator, which then stays "running" and refuses `aclose()`.
A `CancelledError` thrown in reaches the await the generator is stopped at and runs its
`finally` blocks, as a cancelled task would.

Keep in mind: until the handed-over batch has been consumed, the suspended step is not being
waited for. If the consumer itself waits meanwhile (flow control), a timer inside the step that
cancels the task (`asyncio.timeout`) fires into the consumer, not the step.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncGenerator, AsyncIterator, Generator
from typing import Any, TypeVar

T = TypeVar("T")

MAX_BATCH = 256  # items per batch at most, so one huge read (a whole JSON answer) is not one huge send


async def ready_batches(source: AsyncIterator[T], limit: int = MAX_BATCH) -> AsyncGenerator[list[T], None]:
    """`source`'s items, in lists of those ready together; an error of `source` comes after the
    items before it. Close it (`aclose`) before closing `source`."""
    batch: list[T] = []
    error: BaseException | None = None
    while True:
        step = source.__anext__().__await__()
        try:
            signal = step.send(None)
        except StopIteration as done:  # ready
            batch.append(done.value)
            if len(batch) >= limit:
                yield batch
                batch = []
            continue
        except StopAsyncIteration:
            break
        except BaseException as exc:
            error = exc
            break
        if batch:  # the step would wait: what is ready goes first
            try:
                yield batch
            except BaseException:
                await _cancel(step, signal)
                raise
            batch = []
        try:
            item: T = await _rest(step, signal)
        except StopAsyncIteration:
            return
        batch.append(item)
    if batch:
        yield batch
    if error is not None:
        raise error


@types.coroutine
def _rest(step: Generator[Any, None, T], signal: Any) -> Generator[Any, Any, T]:
    """The rest of a step whose first suspension (`signal`) was taken by hand: `yield from` written
    out, since the step has already been started."""
    while True:
        try:
            sent = yield signal
        except GeneratorExit:
            step.close()
            raise
        except BaseException as exc:
            try:
                signal = step.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                signal = step.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


async def _cancel(step: Generator[Any, None, Any], signal: Any) -> None:
    """Cancel a suspended step and wait until it has ended (its generators finalized); what it
    returns is dropped, a cancellation that is not ours (the task's, meanwhile) goes on."""
    cancel = asyncio.CancelledError()
    try:
        signal = step.throw(cancel)
        await _rest(step, signal)
    except asyncio.CancelledError as exc:
        if exc is not cancel:
            raise
    except (StopIteration, StopAsyncIteration):
        pass
