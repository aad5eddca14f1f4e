"""Heavy checks leave the event loop: a budget inside `inline_work`, none outside it."""

from __future__ import annotations

import asyncio

import pytest

from chatbridge.core.inline_work import NeedsWorker, inline_work, spend_inline
from chatbridge.core.types import ToolSpec
from chatbridge.features.tools.schemas import tool_problem


def test_the_budget_only_exists_inside_the_block() -> None:
    spend_inline(10**9)  # no budget: a worker thread, or a caller that asked for none
    with inline_work(100):
        spend_inline(60)
        with pytest.raises(NeedsWorker):
            spend_inline(60)
    spend_inline(10**9)


def test_a_worker_thread_started_after_the_block_has_no_budget() -> None:
    async def main() -> None:
        with inline_work(1):
            pass
        await asyncio.to_thread(spend_inline, 10**9)

    asyncio.run(main())


def test_unchecked_big_schemas_ask_for_a_worker_and_checked_ones_do_not() -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(300)}, "title": "inline-work-test"}
    tools = [ToolSpec("big", parameters=schema)]
    with inline_work(), pytest.raises(NeedsWorker):
        tool_problem(tools)
    assert tool_problem(tools) is None  # in the worker: checked, and the verdict cached
    with inline_work():
        assert tool_problem(tools) is None  # cached verdicts cost nothing on the loop
