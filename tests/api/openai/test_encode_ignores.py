"""The OpenAI encoders ignore what only the Anthropic dialect uses: block boundaries, reasoning
signatures, redacted reasoning, a stop sequence's name and cache figures (they never leak or break)."""

from __future__ import annotations

import orjson

from chatbridge.api.openai.encode import ChunkEncoder, CompletionAggregator
from chatbridge.core.types import BlockEnd, Event, Finish, ReasoningDelta, RedactedReasoning, TextDelta, Usage

RICH: list[Event] = [
    ReasoningDelta("first thought", signature="sig-1"), BlockEnd(), ReasoningDelta("second", signature="sig-2"),
    RedactedReasoning("ENCRYPTED-BLOB"), BlockEnd(), TextDelta("Hello"), BlockEnd(), TextDelta(" world"),
    Usage(10, 5, cache_read_tokens=3, cache_write_tokens=2), Finish("stop", stop_sequence="END"),
]
PLAIN: list[Event] = [ReasoningDelta("first thought"), ReasoningDelta("second"), TextDelta("Hello"),
                      TextDelta(" world"), Usage(10, 5), Finish("stop")]


def _stream(events: list[Event]) -> list[dict[str, object]]:
    encoder = ChunkEncoder("chatcmpl-x", 0, "m", include_usage=True)
    raw = b"".join(encoder.encode(e) for e in events) + encoder.close()
    return [orjson.loads(line[6:]) for line in raw.split(b"\n\n") if line.startswith(b"data: {")]


def test_the_stream_is_the_same_with_or_without_the_anthropic_only_events() -> None:
    rich, plain = _stream(RICH), _stream(PLAIN)
    deltas = [c["choices"][0]["delta"] for c in rich if c["choices"]]  # type: ignore[index]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "first thoughtsecond"  # type: ignore[union-attr]
    assert "".join(d.get("content", "") or "" for d in deltas) == "Hello world"  # type: ignore[union-attr]
    text = orjson.dumps(rich).decode()
    assert "ENCRYPTED-BLOB" not in text and "sig-1" not in text and "END" not in text
    assert [c["choices"] for c in rich] == [c["choices"] for c in plain]


def test_the_aggregate_is_the_same_with_or_without_them() -> None:
    def body(events: list[Event]) -> dict[str, object]:
        aggregator = CompletionAggregator("m")
        for event in events:
            aggregator.add(event)
        doc: dict[str, object] = orjson.loads(aggregator.body())
        return doc

    rich, plain = body(RICH), body(PLAIN)
    assert rich["choices"] == plain["choices"]
    message = rich["choices"][0]["message"]  # type: ignore[index]
    assert message["content"] == "Hello world" and message["reasoning_content"] == "first thoughtsecond"
    assert "ENCRYPTED-BLOB" not in orjson.dumps(rich).decode()
