"""The package's public names."""

from __future__ import annotations

from chatbridge.features import thinking


def test_all_is_complete_and_importable() -> None:
    expected = {
        "MarkupParser",
        "SnapshotSplitter",
        "ReasoningSplitter",
        "ReasoningPolicy",
        "ReasoningMode",
        "UntaggedStart",
    }
    assert set(thinking.__all__) == expected
    assert len(thinking.__all__) == len(expected)
    assert all(hasattr(thinking, name) for name in thinking.__all__)


def test_shape_reasoning_is_gone() -> None:
    """The gateway applies `ReasoningPolicy` as a transform; there is no async-generator twin."""
    assert not hasattr(thinking, "shape_reasoning")
