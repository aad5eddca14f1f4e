"""Ready batches, driven by hand at every point where the source waits (no event loop: deterministic).

The source is scripted: items, `WAIT` (a read that suspends, as a future the task waits on would)
and `RAISE`. Each test steps the batches' awaitables with `send`/`throw` as a task would and
checks what was handed over before each wait, so "nothing ready is held back" is asserted where
it could fail, not inferred from the end result.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Generator
from typing import Any, Literal

import pytest

from chatbridge.api.batching import ready_batches


class Gate:
    """Where the source waits: it yields itself to the task, like a pending future."""

    def __init__(self, name: str = "read") -> None:
        self.name = name

    def __await__(self) -> Generator[Gate, None, None]:
        yield self

    def __repr__(self) -> str:
        return f"Gate({self.name})"


class Boom(Exception):
    pass


WAIT: Literal["wait"] = "wait"
RAISE: Literal["raise"] = "raise"
Token = int | Literal["wait", "raise"]


class Log:
    def __init__(self) -> None:
        self.finalized = 0
        self.cancelled = 0


async def scripted(script: list[Token], log: Log, cleanup: Gate | None = None) -> AsyncGenerator[int, None]:
    """The script as an async generator, like the provider's stream; its `finally` is logged."""
    try:
        for token in script:
            if token == WAIT:
                try:
                    await Gate()
                except asyncio.CancelledError:
                    log.cancelled += 1
                    raise
            elif token == RAISE:
                raise Boom("upstream broke")
            else:
                yield token
    finally:
        if cleanup is not None:
            await cleanup  # a cleanup that waits too (closing an HTTP response may)
        log.finalized += 1


class Wrapped:
    """A class whose `__anext__` is a coroutine awaiting an async generator: the pipeline's shape
    (`PrimedStream` → … → the provider's generator), where 3.11's `close()` does not reach the generator."""

    def __init__(self, inner: AsyncGenerator[int, None]) -> None:
        self.inner = inner

    def __aiter__(self) -> Wrapped:
        return self

    async def __anext__(self) -> int:
        return await self.inner.__anext__()

    async def aclose(self) -> None:
        await self.inner.aclose()


def source(kind: str, script: list[Token], log: Log, cleanup: Gate | None = None) -> AsyncIterator[int]:
    inner = scripted(script, log, cleanup)
    return inner if kind == "generator" else Wrapped(inner)


KINDS = ["generator", "wrapped"]

Outcome = tuple[str, Any]


def advance(it: Generator[Any, None, Any], throw: BaseException | None = None) -> Outcome:
    """Resume a hand-driven awaitable once: ("wait", what it yielded), ("done", value), ("end", None)
    for StopAsyncIteration, or ("raised", the exception)."""
    try:
        signal = it.throw(throw) if throw is not None else it.send(None)
    except StopIteration as done:
        return "done", done.value
    except StopAsyncIteration:
        return "end", None
    except BaseException as exc:
        return "raised", exc
    return "wait", signal


def drive(aw: Awaitable[Any]) -> Outcome:
    """An awaitable run to its end, every wait resumed at once."""
    it = aw.__await__()
    outcome = advance(it)
    while outcome[0] == "wait":
        outcome = advance(it)
    return outcome


def consume(batches: AsyncGenerator[list[int], None]) -> tuple[list[list[int]], list[int], Outcome]:
    """Every batch, the number of items handed over when each wait was reached, and how it ended."""
    got: list[list[int]] = []
    seen_at_wait: list[int] = []
    while True:
        it = batches.__anext__().__await__()
        outcome = advance(it)
        while outcome[0] == "wait":
            seen_at_wait.append(sum(map(len, got)))
            outcome = advance(it)
        if outcome[0] != "done":
            return got, seen_at_wait, outcome
        got.append(outcome[1])


def expected_batches(script: list[Token]) -> list[list[int]]:
    groups: list[list[int]] = [[]]
    for token in script:
        if token == WAIT:
            groups.append([])
        elif token != RAISE:
            groups[-1].append(token)
        else:
            break
    return [g for g in groups if g]


def patterns() -> list[list[Token]]:
    """Four items with 0, 1 or 2 waits in each of the five gaps, some ending in an error."""
    out: list[list[Token]] = []
    for waits in itertools.product((0, 1, 2), repeat=5):
        script: list[Token] = []
        for item, count in zip([1, 2, 3, 4, None], waits, strict=True):
            script += [WAIT] * count
            if item is not None:
                script.append(item)
        out.append(script)
        if sum(waits) % 2:
            out.append([*script[:len(script) // 2], RAISE, *script[len(script) // 2:]])
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_every_pattern_of_ready_and_waiting_items(kind: str) -> None:
    for script in patterns():
        log = Log()
        got, seen_at_wait, outcome = consume(ready_batches(source(kind, script, log)))
        assert got == expected_batches(script), script
        # At each wait, everything scripted before it had already been handed over.
        waits_before = [sum(1 for t in script[:i] if isinstance(t, int)) for i, t in enumerate(script) if t == WAIT]
        assert seen_at_wait == waits_before[: len(seen_at_wait)], script
        if RAISE in script:
            assert outcome[0] == "raised" and isinstance(outcome[1], Boom), script
            assert len(seen_at_wait) == script.index(RAISE) - len([t for t in script[: script.index(RAISE)] if t != WAIT])
        else:
            assert outcome == ("end", None) and len(seen_at_wait) == script.count(WAIT), script
        assert log.finalized == 1, script


def test_an_error_comes_after_the_items_ready_before_it() -> None:
    log = Log()
    batches = ready_batches(scripted([1, 2, RAISE, 3], log))
    assert drive(batches.__anext__()) == ("done", [1, 2])
    kind, error = drive(batches.__anext__())
    assert kind == "raised" and isinstance(error, Boom)
    assert drive(batches.__anext__()) == ("end", None)


def test_a_batch_holds_at_most_limit_items() -> None:
    got, _, outcome = consume(ready_batches(scripted([1, 2, 3, 4, 5], Log()), limit=2))
    assert got == [[1, 2], [3, 4], [5]] and outcome == ("end", None)


@pytest.mark.parametrize("kind", KINDS)
def test_cancellation_during_the_in_flight_step_reaches_the_source(kind: str) -> None:
    log = Log()
    src = source(kind, [1, WAIT, 2], log)
    batches = ready_batches(src)
    assert drive(batches.__anext__()) == ("done", [1])
    it = batches.__anext__().__await__()
    assert advance(it)[0] == "wait"  # the step that was in flight, now waited for by the task
    kind_, error = advance(it, asyncio.CancelledError())
    assert kind_ == "raised" and isinstance(error, asyncio.CancelledError)
    assert log.cancelled == 1 and log.finalized == 1
    assert drive(src.aclose()) == ("done", None)  # closes cleanly: the generator is not left running


def test_a_source_that_answers_a_cancellation_goes_on() -> None:
    """What the task throws in is the step's to handle: here it is swallowed and an item follows."""

    async def stubborn() -> AsyncGenerator[int, None]:
        try:
            await Gate()
        except asyncio.CancelledError:
            yield -1
        yield 2

    batches = ready_batches(stubborn())
    it = batches.__anext__().__await__()
    assert advance(it)[0] == "wait"
    assert advance(it, asyncio.CancelledError()) == ("done", [-1, 2])


@pytest.mark.parametrize("kind", KINDS)
def test_aclose_while_a_step_is_suspended_finalizes_the_source(kind: str) -> None:
    log = Log()
    src = source(kind, [1, WAIT, 2], log)
    batches = ready_batches(src)
    assert drive(batches.__anext__()) == ("done", [1])  # handed over while the next read waits
    assert log.finalized == 0
    assert drive(batches.aclose()) == ("done", None)
    assert log.cancelled == 1 and log.finalized == 1
    assert drive(src.aclose()) == ("done", None)  # and the source closes without "already running"
    assert drive(batches.__anext__()) == ("end", None)


@pytest.mark.parametrize("kind", KINDS)
def test_aclose_waits_for_a_cleanup_that_waits(kind: str) -> None:
    log = Log()
    cleanup = Gate("cleanup")
    batches = ready_batches(source(kind, [1, WAIT, 2], log, cleanup))
    assert drive(batches.__anext__()) == ("done", [1])
    it = batches.aclose().__await__()
    assert advance(it) == ("wait", cleanup)  # the cleanup's own wait goes to the task
    assert log.finalized == 0
    assert advance(it) == ("done", None)
    assert log.finalized == 1


def test_a_cancellation_of_the_task_during_that_cleanup_is_not_swallowed() -> None:
    log = Log()
    cleanup = Gate("cleanup")
    batches = ready_batches(scripted([1, WAIT, 2], log, cleanup))
    assert drive(batches.__anext__()) == ("done", [1])
    it = batches.aclose().__await__()
    assert advance(it) == ("wait", cleanup)
    kind, error = advance(it, asyncio.CancelledError("the task's"))
    assert kind == "raised" and isinstance(error, asyncio.CancelledError) and error.args == ("the task's",)


def test_aclose_after_a_batch_that_left_nothing_in_flight() -> None:
    log = Log()
    src = scripted([1, 2, 3], log)
    batches = ready_batches(src, limit=2)
    assert drive(batches.__anext__()) == ("done", [1, 2])
    assert drive(batches.aclose()) == ("done", None)
    assert log.finalized == 0  # nothing was in flight: closing the source is its owner's business
    assert drive(src.aclose()) == ("done", None)
    assert log.finalized == 1


def test_with_a_real_loop_a_consumer_cancelled_while_it_sends_closes_everything() -> None:
    """The endpoint's case: the client leaves while a batch is being sent and the next read waits."""
    log = Log()

    async def upstream() -> AsyncGenerator[int, None]:
        try:
            yield 1
            yield 2
            await asyncio.sleep(3600)
            yield 3
        finally:
            log.finalized += 1

    async def consumer(sent: list[list[int]], sending: asyncio.Event) -> None:
        src = Wrapped(upstream())
        batches = ready_batches(src)
        try:
            async for batch in batches:
                sent.append(batch)
                sending.set()
                await asyncio.sleep(3600)  # a send held up by flow control
        finally:
            await batches.aclose()
            await src.aclose()

    async def main() -> list[list[int]]:
        sent: list[list[int]] = []
        sending = asyncio.Event()
        task = asyncio.ensure_future(consumer(sent, sending))
        await sending.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return sent

    assert asyncio.run(main()) == [[1, 2]]
    assert log.finalized == 1
