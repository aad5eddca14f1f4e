"""Kimi's Connect stream read sans-IO: envelopes at every byte offset, patches, citations, errors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from chatbridge.core.connect import ConnectDecoder, ConnectFrame, ConnectFramingError, envelope
from chatbridge.core.errors import FrameTooLarge, UpstreamProtocolError, UpstreamTransportError
from chatbridge.core.types import ConversationRef, Event, Finish, Notice, ReasoningDelta, TextDelta
from chatbridge.providers.kimi.citations import MAX_MARKER, CitationRewriter, Sources
from chatbridge.providers.kimi.errors import KimiError, classify_kimi_error, protobuf_strings
from chatbridge.providers.kimi.stream import KimiStreamReader
from tests.upstreams.kimi import ChatCall, KimiEmulator, KimiReply, connect_frame, protobuf_text

SOURCES = [{"title": "北京 - 维基百科", "url": "https://zh.wikipedia.org/wiki/北京", "site": "wikipedia"},
           {"title": "Beijing [city]", "url": "https://example.org/beijing(1)"}]


def emulated(reply: KimiReply, heartbeats: bool = True) -> bytes:
    """The bytes of one answer as the emulator streams it."""
    emulator = KimiEmulator()
    emulator.heartbeats = heartbeats
    call = ChatCall("user-1", "chat-1", True, None, "hi", [], "SCENARIO_K2D5", bool(reply.thinking), bool(reply.sources),
                    None, "token")
    return b"".join(emulator._frames(call, reply, "user-msg-1", "answer-1"))


def read(chunks: Iterable[bytes]) -> list[Event]:
    decoder, reader = ConnectDecoder(), KimiStreamReader()
    events: list[Event] = []
    for chunk in chunks:
        for frame in decoder.decode(chunk):
            events += reader.read(frame)
    decoder.flush()
    return events + list(reader.finish())


def summary(events: list[Event]) -> tuple[str, str, list[Event]]:
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    return text, reasoning, [e for e in events if not isinstance(e, (TextDelta, ReasoningDelta))]


FULL = KimiReply(text="北京是中国的首都。它有三千多年的历史。", thinking="用户问北京。我应该回答首都的事实。",
                 sources=SOURCES, cite=[1, 2], degrade=True)


def test_a_full_answer_reads_into_reasoning_text_with_citations_sources_and_the_conversation() -> None:
    text, reasoning, others = summary(read([emulated(FULL)]))
    assert reasoning == FULL.thinking
    assert text == (
        "北京是中国的首都[1][2]。它有三千多年的历史。\n\nSources:\n"
        "1. [北京 - 维基百科](https://zh.wikipedia.org/wiki/%E5%8C%97%E4%BA%AC)\n"
        "2. [Beijing \\[city\\]](https://example.org/beijing%281%29)"
    )
    assert others == [Notice("model_degraded", "当前使用人数较多，已为你切换到轻量模型"),
                      ConversationRef("chat-1", "answer-1"), Finish("stop")]


def test_every_split_of_the_stream_reads_the_same() -> None:
    data = emulated(FULL)
    whole = read([data])
    for cut in range(1, len(data)):
        assert read([data[:cut], data[cut:]]) == whole, cut


def test_byte_by_byte_reads_the_same_text() -> None:
    data = emulated(FULL)
    assert summary(read(data[i : i + 1] for i in range(len(data)))) == summary(read([data]))


def test_the_decoder_holds_only_the_unfinished_frame() -> None:
    decoder = ConnectDecoder()
    frame = envelope(b'{"heartbeat":{}}')
    assert decoder.decode(frame + frame[:3]) == [ConnectFrame(0, b'{"heartbeat":{}}')]
    assert decoder.pending == 3
    with pytest.raises(ConnectFramingError, match="ended inside a frame"):
        decoder.flush()


def test_an_absurd_length_is_refused_from_its_header_not_buffered() -> None:
    with pytest.raises(FrameTooLarge, match="larger than"):
        ConnectDecoder().decode(b"\x00\xff\xff\xff\xff{")


def test_the_first_piece_comes_in_a_set_and_a_later_set_replaces_the_block() -> None:
    frames = [
        {"op": "set", "mask": "block.text", "block": {"id": "0", "text": {"content": "Hel"}}},
        {"op": "append", "mask": "block.text.content", "block": {"id": "0", "text": {"content": "lo"}}},
        {"op": "set", "mask": "block.text", "block": {"id": "0", "text": {"content": "Hello, world"}}},
        {"op": "set", "mask": "block.text", "block": {"id": "0", "text": {"content": "Hello, world"}}},
        {"op": "set", "mask": "message", "message": {"id": "a1", "role": "assistant"}},
        {"done": {}},
    ]
    text, _, _ = summary(read([b"".join(connect_frame(f) for f in frames)]))
    assert text == "Hello, world"


def test_comma_joined_masks_tool_blocks_summaries_and_stages_add_no_text() -> None:
    frames = [
        {"op": "set", "block": {"id": "t", "tool": {"name": "web_search", "status": "TOOL_STATUS_RUNNING"}}},
        {"op": "set", "mask": "block.tool.args,block.tool.status", "block": {"id": "t", "tool": {"args": "{}"}}},
        {"op": "set", "mask": "block.think.summary", "block": {"id": "k", "think": {"summary": "A title"}}},
        {"op": "set", "mask": "block.think,block.think.summary", "block": {"id": "k", "think": {"content": "why", "summary": "T"}}},
        {"op": "set", "mask": "block.stage", "block": {"id": "s", "stage": {"status": "STAGE_STATUS_END"}}},
        {"op": "append", "mask": "block.text.content", "block": {"id": "x", "text": {"content": "answer"}}},
        {"op": "set", "mask": "message", "message": {"id": "a1", "role": "assistant"}},
        {"done": {}},
    ]
    text, reasoning, _ = summary(read([b"".join(connect_frame(f) for f in frames)]))
    assert (text, reasoning) == ("answer", "why")


def test_an_older_stream_marks_reasoning_as_flagged_text() -> None:
    frames = [
        {"op": "set", "mask": "block.text,block.text.flags", "block": {"id": "0", "text": {"content": "hmm", "flags": "thinking"}}},
        {"op": "set", "mask": "block.text", "block": {"id": "1", "text": {"content": "yes"}}},
        {"done": {}},
    ]
    text, reasoning, _ = summary(read([b"".join(connect_frame(f) for f in frames)]))
    assert (text, reasoning) == ("yes", "hmm")


def test_an_answer_that_arrives_whole_is_one_piece() -> None:
    events = read([emulated(KimiReply(text="x" * 500, whole=True), heartbeats=False)])
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("x" * 500)]


def test_an_end_of_stream_error_with_base64_details_is_read_and_classified() -> None:
    error = {"error": {"code": "failed_precondition", "message": "当前对话正在生成中",
                       "details": [{"type": "common.error.v1.ErrorDetail", "value": protobuf_text("chat.user_stream_pushing")}]}}
    with pytest.raises(KimiError) as caught:
        read([connect_frame(error, flags=0x02)])
    assert "chat.user_stream_pushing" in caught.value.message and "当前对话正在生成中" in caught.value.message
    assert classify_kimi_error(caught.value).kind.value == "busy"


def test_an_in_stream_error_frame_after_some_text_raises() -> None:
    frames = [connect_frame({"op": "set", "mask": "block.text", "block": {"id": "0", "text": {"content": "Hi"}}}),
              connect_frame({"error": {"code": "resource_exhausted", "message": "rate limited",
                                       "details": [{"debug": {"localizedMessage": "请稍后再试"}}]}})]
    with pytest.raises(KimiError) as caught:
        read(frames)
    assert classify_kimi_error(caught.value).kind.value == "rate_limited" and "请稍后再试" in caught.value.message


def test_a_stream_without_its_end_broke_off() -> None:
    frame = connect_frame({"op": "set", "mask": "block.text", "block": {"id": "0", "text": {"content": "Hi"}}})
    with pytest.raises(UpstreamTransportError, match="broke off"):
        read([frame])


def test_frames_that_are_not_json_objects_are_protocol_errors() -> None:
    for bad in (b"\x00\x00\x00\x00\x03abc", connect_frame([1, 2]), connect_frame({"done": {}}, flags=0x01)):
        with pytest.raises(UpstreamProtocolError):
            read([bad])


def test_a_done_without_any_answer_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="without any answer"):
        read([connect_frame({"heartbeat": {}}), connect_frame({"done": {}})])


def test_protobuf_text_fields_are_found_nested_and_garbage_is_skipped() -> None:
    inner = b"\x0a\x05hello"
    outer = b"\x08\x96\x01" + b"\x12" + bytes([len(inner)]) + inner + b"\x1a\x03abc"
    assert protobuf_strings(outer) == ["hello", "abc"]
    assert protobuf_strings(b"\xff\xff\xff") == []


MARKED = ("首都是北京\ue200cite\ue202web_search:0#2:~:text=北京\ue201\ue200cite\ue202web_search:0#1\ue201。"
          "a<b and <REF>cite✦tools://call_7#1:~:text=x</REF> end\ue000 <RE")


def rewrite(pieces: Iterable[str]) -> str:
    sources = Sources()
    for source in SOURCES:
        sources.add({"base": source})
    rewriter = CitationRewriter(sources)
    return "".join(rewriter.feed(p) for p in pieces) + rewriter.flush()


def test_citation_markers_become_numbers_however_the_text_is_cut() -> None:
    whole = rewrite([MARKED])
    assert whole == "首都是北京[2][1]。a<b and [1] end <RE"
    for cut in range(1, len(MARKED)):
        assert rewrite([MARKED[:cut], MARKED[cut:]]) == whole, cut
    assert rewrite(MARKED) == whole


def test_a_marker_naming_no_known_source_is_numbered_after_the_sources() -> None:
    assert rewrite(["a\ue200cite\ue202turn0search9\ue201 b\ue200cite\ue202web_search:0#7\ue201"]) == "a[3] b[4]"


def test_text_that_only_looks_like_a_marker_start_is_released() -> None:
    held = "x\ue200cit" + "y" * (MAX_MARKER + 10)
    assert rewrite([held]) == "xcit" + "y" * (MAX_MARKER + 10)


def test_only_http_links_are_made_of_sources() -> None:
    sources = Sources()
    sources.add({"base": {"title": "evil", "url": "javascript:alert(1)"}})
    sources.add({"base": {"title": "ok", "url": "https://example.org/a b"}})
    assert sources.footnotes() == "\n\nSources:\n1. evil\n2. [ok](https://example.org/a%20b)"


def frames_of(*objects: dict[str, Any] | bytes) -> bytes:
    return b"".join(o if isinstance(o, bytes) else connect_frame(o) for o in objects)


CHAT = {"op": "set", "chat": {"id": "c1", "name": "n"}}
WHOLE_MESSAGE = {"op": "set", "mask": "message", "message": {
    "id": "m1", "role": "assistant", "status": "MESSAGE_STATUS_COMPLETED",
    "blocks": [{"id": "0_0", "think": {"content": "WHY"}}, {"id": "0_1", "text": {"content": "WHOLE ANSWER"}}]}}


def test_an_answer_that_comes_whole_in_the_assistant_message_is_read() -> None:
    text, reasoning, others = summary(read([frames_of(CHAT, WHOLE_MESSAGE, {"done": {}})]))
    assert (text, reasoning) == ("WHOLE ANSWER", "WHY")
    assert others == [ConversationRef("c1", "m1"), Finish("stop")]


def text_block(op: str, content: str | None, block: str = "0_1") -> dict[str, Any]:
    mask = "block.text.content" if op == "append" else "block.text"
    return {"op": op, "mask": mask, "block": {"id": block, "text": {} if content is None else {"content": content}}}


@pytest.mark.parametrize("first", ["WHO", "", None])
def test_blocks_streamed_again_after_the_whole_message_are_not_repeated(first: str | None) -> None:
    rest = "WHOLE ANSWER"[len(first or ""):]
    again = [text_block("set", first), text_block("append", rest[:5]), text_block("append", rest[5:] + ", and more")]
    text, _, _ = summary(read([frames_of(CHAT, WHOLE_MESSAGE, *again, text_block("append", "!"), {"done": {}})]))
    assert text == "WHOLE ANSWER, and more!"


def test_a_whole_message_after_the_stream_adds_only_what_it_has_more() -> None:
    streamed = [text_block("set", "WHOLE"), text_block("append", " ANS")]
    text, reasoning, _ = summary(read([frames_of(CHAT, *streamed, WHOLE_MESSAGE, {"done": {}})]))
    assert (text, reasoning) == ("WHOLE ANSWER", "WHY")


def test_a_completed_message_then_a_clean_end_of_the_body_is_a_whole_reply() -> None:
    status = {"op": "set", "mask": "message.status", "message": {"id": "m1", "status": "MESSAGE_STATUS_COMPLETED"}}
    events = read([frames_of(CHAT, text_block("set", "Hi"), status)])
    assert summary(events)[0] == "Hi" and events[-1] == Finish("stop")
    generating = {"op": "set", "mask": "message", "message": {"id": "m1", "role": "assistant",
                                                             "status": "MESSAGE_STATUS_GENERATING"}}
    with pytest.raises(UpstreamTransportError, match="broke off"):
        read([frames_of(CHAT, generating, text_block("set", "Hi"))])


def test_a_grpc_web_trailer_frame_is_skipped() -> None:
    trailer = connect_frame(b"grpc-status: 0\r\ngrpc-message: \r\n", flags=0x80)
    text, _, others = summary(read([frames_of(CHAT, text_block("set", "Hi"), trailer, text_block("append", "!"),
                                              {"done": {}})]))
    assert text == "Hi!" and others[-1] == Finish("stop")


def test_an_answer_flag_ends_the_thinking_of_the_same_block() -> None:
    flagged = [
        {"op": "set", "mask": "block.text,block.text.flags", "block": {"id": "0", "text": {"content": "hmm", "flags": "thinking"}}},
        {"op": "set", "mask": "block.text.flags", "block": {"id": "0", "text": {"flags": "answer"}}},
        {"op": "append", "mask": "block.text.content", "block": {"id": "0", "text": {"content": " yes"}}},
        {"done": {}},
    ]
    text, reasoning, _ = summary(read([frames_of(*flagged)]))
    assert (text, reasoning) == (" yes", "hmm")


def test_a_localized_message_object_in_the_error_details_is_read() -> None:
    error = {"error": {"code": "resource_exhausted", "message": "limited",
                       "details": [{"debug": {"localizedMessage": {"locale": "zh-CN", "message": "请稍后再试"}}}]}}
    with pytest.raises(KimiError) as caught:
        read([connect_frame(error)])
    assert "请稍后再试" in caught.value.message and "zh-CN" not in caught.value.message
