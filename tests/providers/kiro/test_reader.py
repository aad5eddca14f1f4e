"""Kiro's answer reader: event-stream messages in, core events out (sans-IO, at every byte offset)."""

from __future__ import annotations

import json
import logging

import pytest

from chatbridge.core.errors import (
    FailureKind,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamTransportError,
)
from chatbridge.core.types import (
    BlockEnd,
    Event,
    Finish,
    ReasoningDelta,
    RedactedReasoning,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from chatbridge.providers.kiro.errors import classify
from chatbridge.providers.kiro.eventstream import EventStreamDecoder
from chatbridge.providers.kiro.reader import KiroAnswerReader
from chatbridge.providers.kiro.tools import ToolNames, upstream_name
from tests.upstreams.kiro_frames import KiroReply, encode_frame, event_frame, exception_frame, reply_frames, sign


def read(stream: bytes, chunks: list[bytes] | None = None, names: ToolNames | None = None,
         prompt_estimate: int = 2100) -> list[Event]:
    decoder = EventStreamDecoder()
    reader = KiroAnswerReader("kiro", names or ToolNames(), prompt_estimate=prompt_estimate, window=200_000)
    events: list[Event] = []
    for chunk in chunks if chunks is not None else [stream]:
        for message in decoder.decode(chunk):
            events += reader.read(message)
    for message in decoder.flush():
        events += reader.read(message)
    return events + reader.finish()


def merged(events: list[Event]) -> list[Event]:
    """Adjacent text and reasoning pieces joined, so answers compare however they were cut."""
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, TextDelta) and isinstance(last, TextDelta):
            out[-1] = TextDelta(last.text + event.text)
        elif isinstance(event, ReasoningDelta) and isinstance(last, ReasoningDelta) and last.signature is None:
            out[-1] = ReasoningDelta(last.text + event.text, event.signature)
        elif isinstance(event, ToolCallDelta) and isinstance(last, ToolCallDelta) and event.id is None and last.index == event.index:
            out[-1] = ToolCallDelta(last.index, last.id, last.name, last.arguments + event.arguments)
        else:
            out.append(event)
    return out


def test_signed_reasoning_text_and_a_tool_call() -> None:
    reply = KiroReply(text="Checking the weather.", reasoning=["The user wants weather."],
                      tool_calls=[{"name": "get_weather", "input": {"city": "Paris"}, "id": "tooluse_abc"}])
    events = merged(read(b"".join(reply_frames(reply))))
    assert events[:4] == [
        ReasoningDelta("The user wants weather.", sign("The user wants weather.")),
        TextDelta("Checking the weather."),
        ToolCallDelta(0, "tooluse_abc", "get_weather", '{"city": "Paris"}'),
        Usage(3000, events[3].completion_tokens, estimated=False),  # type: ignore[union-attr]
    ]
    assert events[4:] == [Finish("tool_calls")]


def test_every_byte_offset_gives_the_same_answer() -> None:
    reply = KiroReply(text="春天来了 — spring is here 🌸", reasoning=["Think ✨ first.", "Then again."],
                      tool_calls=[{"name": "search", "input": {"q": "花"}, "id": "tooluse_1"}], pieces=5)
    stream = b"".join(reply_frames(reply))
    whole = merged(read(stream))
    for offset in range(len(stream) + 1):
        assert merged(read(stream, [stream[:offset], stream[offset:]])) == whole, offset


def test_separately_signed_blocks_are_separated_by_a_block_end() -> None:
    events = read(b"".join(reply_frames(KiroReply(text="ok", reasoning=["first", "second"], pieces=1))))
    assert events[:5] == [ReasoningDelta("first"), ReasoningDelta("", sign("first")), BlockEnd(),
                          ReasoningDelta("second"), ReasoningDelta("", sign("second"))]


def test_redacted_reasoning_passes_on_opaque() -> None:
    events = read(b"".join(reply_frames(KiroReply(text="ok", redacted="RW5jcnlwdGVk"))))
    assert RedactedReasoning("RW5jcnlwdGVk") in events


def test_tool_names_come_back_as_the_client_sent_them() -> None:
    long_name = "mcp__a_very_long_server_name__with_a_very_long_tool_name_that_goes_past_64_chars"
    names = ToolNames([long_name])
    short = upstream_name(long_name)
    assert len(short) <= 64 and short != long_name
    reply = KiroReply(text="", tool_calls=[{"name": short, "input": {}, "id": "tooluse_x"}])
    calls = [e for e in read(b"".join(reply_frames(reply)), names=names) if isinstance(e, ToolCallDelta)]
    assert calls[0].name == long_name and "".join(c.arguments for c in calls) == "{}"


def test_fragments_that_carry_only_input_or_only_stop() -> None:
    frames = [
        event_frame("toolUseEvent", {"name": "f", "toolUseId": "tooluse_1", "input": ""}),
        event_frame("toolUseEvent", {"input": '{"a": '}),
        event_frame("toolUseEvent", {"input": "1}"}),
        event_frame("toolUseEvent", {"stop": True}),
        event_frame("toolUseEvent", {"name": "g", "toolUseId": "tooluse_2", "input": {"b": 2}}),
        event_frame("meteringEvent", {"usage": 0.1}),
    ]
    events = merged(read(b"".join(frames)))
    assert events[:2] == [ToolCallDelta(0, "tooluse_1", "f", '{"a": 1}'), ToolCallDelta(1, "tooluse_2", "g", '{"b":2}')]
    assert events[-1] == Finish("tool_calls")


def test_a_stream_without_its_closing_events_finishes_with_length(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="chatbridge.providers.kiro"):
        events = read(b"".join(reply_frames(KiroReply(text="A long answer that"), truncated=True)))
    assert events[-1] == Finish("length") and "closing events" in caplog.text


def test_a_tool_call_cut_off_midway_finishes_with_length(caplog: pytest.LogCaptureFixture) -> None:
    frames = [event_frame("toolUseEvent", {"name": "write", "toolUseId": "tooluse_1", "input": '{"content": "lo'})]
    with caplog.at_level(logging.WARNING, logger="chatbridge.providers.kiro"):
        events = read(b"".join([*frames, event_frame("meteringEvent", {"usage": 1})]))
    assert events[-1] == Finish("length") and "cut off" in caplog.text


def test_a_content_length_exception_finishes_with_length() -> None:
    frames = [event_frame("assistantResponseEvent", {"content": "Part of"}),
              exception_frame("ContentLengthExceededException", "Response exceeded the length limit")]
    events = read(b"".join(frames))
    assert events[0] == TextDelta("Part of") and events[-1] == Finish("length")


@pytest.mark.parametrize(("kind", "status", "failure"), [
    ("ThrottlingException", 429, "rate_limited"), ("InternalServerException", 500, "transient"),
    ("ValidationException", 400, "bad_request"),
])
def test_exception_frames_are_errors_classified_like_their_status(kind: str, status: int, failure: str) -> None:
    frames = [event_frame("assistantResponseEvent", {"content": "Hi"}), exception_frame(kind, "something happened")]
    with pytest.raises(UpstreamStatusError) as caught:
        read(b"".join(frames))
    assert caught.value.status == status and kind in caught.value.message
    assert classify(caught.value).kind.value == failure


def test_error_frames_are_errors() -> None:
    frame = encode_frame({":message-type": "error", ":error-code": "InternalError", ":error-message": "boom"}, b"")
    with pytest.raises(UpstreamError, match="InternalError"):
        read(frame)


def test_usage_from_the_context_percentage_and_from_metrics() -> None:
    by_percent = read(b"".join(reply_frames(KiroReply(text="ok", context_percent=2.5))))
    usage = next(e for e in by_percent if isinstance(e, Usage))
    assert usage.prompt_tokens == 5000 and not usage.estimated  # Kiro's own meter
    reported = KiroReply(text="ok", usage={"inputTokens": 1200, "outputTokens": 34, "cacheReadInputTokens": 800,
                                           "cacheWriteInputTokens": 100})
    usage = next(e for e in read(b"".join(reply_frames(reported))) if isinstance(e, Usage))
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (2100, 34, 800, 100)
    assert not usage.estimated


def test_without_any_figures_the_prompt_is_the_estimate() -> None:
    frames = [event_frame("assistantResponseEvent", {"content": "Hi"}), event_frame("meteringEvent", {"usage": 1})]
    usage = next(e for e in read(b"".join(frames), prompt_estimate=4321) if isinstance(e, Usage))
    assert usage.prompt_tokens == 4321 and usage.completion_tokens == 1 and usage.estimated


def test_a_wrapped_payload_is_read_too() -> None:
    frames = [event_frame("assistantResponseEvent", {"assistantResponseEvent": {"content": "wrapped"}}),
              event_frame("meteringEvent", {"usage": 1})]
    assert read(b"".join(frames))[0] == TextDelta("wrapped")


def test_nothing_at_all_is_a_protocol_error_never_an_empty_answer() -> None:
    with pytest.raises(UpstreamProtocolError, match="without sending any event"):
        read(b"")
    with pytest.raises(UpstreamProtocolError, match="without sending any event"):
        read(event_frame("followupPromptEvent", {"content": "Ask me more"}))


def test_a_payload_that_is_not_json_is_a_protocol_error() -> None:
    frame = encode_frame({":message-type": "event", ":event-type": "assistantResponseEvent"}, b"\xff\xfe not json")
    with pytest.raises(UpstreamProtocolError, match="not UTF-8 JSON"):
        read(frame)


def test_a_json_body_where_a_stream_belongs_is_a_protocol_error() -> None:
    reader = KiroAnswerReader("kiro", ToolNames(), prompt_estimate=1, window=1)
    with pytest.raises(UpstreamProtocolError, match="instead of an event stream"):
        reader.read_body(json.dumps({"message": "odd"}).encode())


def test_an_emoji_split_into_escaped_halves_costs_that_character_not_the_answer() -> None:
    headers = {":event-type": "assistantResponseEvent", ":content-type": "application/json", ":message-type": "event"}
    frames = [encode_frame(headers, json.dumps({"content": piece}).encode()) for piece in ("ok ", "\ud83d", "\ude00", "!")]
    events = merged(read(b"".join(frames)))
    assert events[0] == TextDelta("ok \ufffd\ufffd!")


def reader_after(frames: list[bytes]) -> KiroAnswerReader:
    """A reader that has read `frames` (and nothing has ended yet)."""
    reader = KiroAnswerReader("kiro", ToolNames(), prompt_estimate=2100, window=200_000, credential_id="c1")
    decoder = EventStreamDecoder()
    for message in decoder.decode(b"".join(frames)):
        list(reader.read(message))
    return reader


@pytest.mark.parametrize("event", ["messageMetadataEvent", "metadataEvent"])
def test_a_metadata_event_closes_the_answer_only_with_token_figures(event: str, caplog: pytest.LogCaptureFixture) -> None:
    lead = event_frame(event, {"conversationId": "c-1", "utteranceId": "u-1"})
    text = event_frame("assistantResponseEvent", {"content": "partial"})
    with caplog.at_level(logging.WARNING, "chatbridge.providers.kiro"):
        assert read(lead + text)[-1] == Finish("length")
    assert "without its closing events" in caplog.text
    closing = event_frame(event, {"tokenUsage": {"inputTokens": 1234, "outputTokens": 5}})
    events = read(lead + text + closing)
    usage = next(e for e in events if isinstance(e, Usage))
    assert events[-1] == Finish("stop") and (usage.prompt_tokens, usage.completion_tokens) == (1234, 5)
    with pytest.raises(UpstreamProtocolError, match="without sending any event"):
        read(lead)  # a metadata event alone is no answer


@pytest.mark.parametrize("payload", [b'{"message":"Encountered an unexpected error"}',
                                     b'{"__type":"com.amazon#ThrottlingException","message":"Encountered an unexpected error"}',
                                     b"Encountered an unexpected error"])
def test_an_error_event_is_an_error_as_an_exception_frame_is(payload: bytes) -> None:
    text = event_frame("assistantResponseEvent", {"content": "x"})
    error = encode_frame({":event-type": "error", ":content-type": "application/json", ":message-type": "event"}, payload)
    with pytest.raises(UpstreamStatusError, match="Encountered an unexpected error") as caught:
        read(text + error)
    throttled = b"Throttling" in payload
    assert caught.value.status == (429 if throttled else 500)
    assert classify(caught.value).kind is (FailureKind.RATE_LIMITED if throttled else FailureKind.TRANSIENT)


def finish_after(frames: list[bytes], error: UpstreamError) -> Event:
    """How an answer ends when its body broke off with `error` after `frames`."""
    events = reader_after(frames).cut_short(error)
    assert events is not None
    return events[-1]


def test_a_body_that_breaks_off_after_content_ends_as_truncated() -> None:
    reset = UpstreamTransportError("kiro upstream broke off its response: reset", provider="kiro")
    text = event_frame("assistantResponseEvent", {"content": "partial"})
    assert finish_after([text], reset) == Finish("length")
    tool = event_frame("toolUseEvent", {"toolUseId": "tooluse_a", "name": "f", "input": '{"path": "/tm'})
    assert finish_after([tool], reset) == Finish("length")
    closed = [text, event_frame("contextUsageEvent", {"contextUsagePercentage": 1.0})]
    assert finish_after(closed, reset) == Finish("stop")  # only the end of the body was lost
    decoder = EventStreamDecoder()
    decoder.decode(text[: len(text) // 2])
    with pytest.raises(UpstreamProtocolError, match="ended inside a frame") as cut:
        decoder.flush()
    assert finish_after([text], cut.value) == Finish("length")


def test_breaks_that_are_not_a_cut_short_answer_stay_errors() -> None:
    reset = UpstreamTransportError("kiro upstream broke off its response: reset", provider="kiro")
    assert reader_after([]).cut_short(reset) is None  # nothing answered: another credential may
    text = [event_frame("assistantResponseEvent", {"content": "partial"})]
    assert reader_after(text).cut_short(UpstreamTimeout("no content for 300 s", provider="kiro")) is None
    assert reader_after(text).cut_short(UpstreamProtocolError("a frame whose message CRC does not match", provider="kiro")) is None


def test_repeated_identical_text_events_are_all_kept() -> None:
    """The notes say text events are deltas (§4.4); deduplicating or reading them as cumulative would lose these."""
    frames = [event_frame("assistantResponseEvent", {"content": piece}) for piece in ("ha", "ha", "haha", "!")]
    assert merged(read(b"".join(frames)))[0] == TextDelta("hahahaha!")
