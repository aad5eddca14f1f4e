"""Reasoning: markup → `ReasoningDelta`/`TextDelta`, then the client's reasoning policy.

Both steps are sans-IO `EventTransform`s the gateway applies to an event stream::

    splitter = ReasoningSplitter(untagged_start)  # providers that emit markup
    policy = ReasoningPolicy(mode)                # every answer

`MarkupParser` and `SnapshotSplitter` are the pieces the splitter is built from, for tests and
for providers that want to parse a complete answer.
"""

from __future__ import annotations

from chatbridge.features.thinking.markup import MarkupParser, UntaggedStart
from chatbridge.features.thinking.policy import ReasoningMode, ReasoningPolicy
from chatbridge.features.thinking.snapshots import SnapshotSplitter
from chatbridge.features.thinking.splitter import ReasoningSplitter

__all__ = [
    "MarkupParser",
    "ReasoningMode",
    "ReasoningPolicy",
    "ReasoningSplitter",
    "SnapshotSplitter",
    "UntaggedStart",
]
