"""AWS event-stream frames as Kiro sends them, written independently of the gateway's decoder.

`encode_frame` writes every header type of the spec (bool, byte, short, int, long, bytes,
string, timestamp, UUID); `reply_frames` renders a scripted Kiro answer into the events Kiro
streams: reasoning (text pieces, then the signature), text, tool-use fragments, and the closing
`meteringEvent` / `contextUsageEvent` / `metricsEvent`. botocore's decoder checks these in
tests/upstreams/test_kiro_emulator.py, so the gateway's decoder is tested against frames it did
not make itself.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Byte", "KiroReply", "Long", "Short", "encode_frame", "error_event_frame", "error_message_frame", "event_frame",
           "exception_frame", "reply_frames", "sign"]


@dataclass(frozen=True)
class Byte:
    value: int


@dataclass(frozen=True)
class Short:
    value: int


@dataclass(frozen=True)
class Long:
    value: int


HeaderValue = bool | Byte | Short | int | Long | bytes | str | datetime.datetime | uuid.UUID


def _header(name: str, value: HeaderValue) -> bytes:
    raw_name = name.encode("utf-8")
    out = struct.pack("!B", len(raw_name)) + raw_name
    if value is True:
        return out + b"\x00"
    if value is False:
        return out + b"\x01"
    if isinstance(value, Byte):
        return out + b"\x02" + struct.pack("!b", value.value)
    if isinstance(value, Short):
        return out + b"\x03" + struct.pack("!h", value.value)
    if isinstance(value, int):
        return out + b"\x04" + struct.pack("!i", value)
    if isinstance(value, Long):
        return out + b"\x05" + struct.pack("!q", value.value)
    if isinstance(value, bytes):
        return out + b"\x06" + struct.pack("!H", len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return out + b"\x07" + struct.pack("!H", len(raw)) + raw
    if isinstance(value, datetime.datetime):
        millis = round(value.timestamp() * 1000)
        return out + b"\x08" + struct.pack("!q", millis)
    assert isinstance(value, uuid.UUID)
    return out + b"\x09" + value.bytes


def encode_frame(headers: dict[str, HeaderValue], payload: bytes, *, corrupt: str | None = None) -> bytes:
    """One frame; `corrupt` = "prelude" or "message" breaks that CRC on purpose."""
    encoded = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    prelude_crc = zlib.crc32(prelude) ^ (1 if corrupt == "prelude" else 0)
    head = prelude + struct.pack("!I", prelude_crc) + encoded + payload
    message_crc = zlib.crc32(head) ^ (1 if corrupt == "message" else 0)
    return head + struct.pack("!I", message_crc)


def event_frame(event_type: str, payload: dict[str, Any], *, corrupt: str | None = None) -> bytes:
    """An `event` frame with the three string headers, in the order the protocol notes show."""
    headers: dict[str, HeaderValue] = {
        ":event-type": event_type, ":content-type": "application/json", ":message-type": "event",
    }
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return encode_frame(headers, data, corrupt=corrupt)


def exception_frame(kind: str, message: str) -> bytes:
    headers: dict[str, HeaderValue] = {
        ":exception-type": kind, ":content-type": "application/json", ":message-type": "exception",
    }
    return encode_frame(headers, json.dumps({"message": message}).encode("utf-8"))


def error_message_frame(code: str, message: str) -> bytes:
    """An `error` message (`:message-type: error`, `:error-code`, `:error-message`), as the AWS spec has it."""
    headers: dict[str, HeaderValue] = {":error-code": code, ":error-message": message, ":message-type": "error"}
    return encode_frame(headers, b"")


def error_event_frame(message: str) -> bytes:
    """The SDK's `error` member of the event union (an InternalServerException), sent as an event."""
    return event_frame("error", {"message": message})


SIGNING_KEY = b"kiro-emulator-signing-key"


def sign(text: str) -> str:
    """The emulator's thinking signature: an HMAC only it can make, like the real service's."""
    return base64.b64encode(hmac.new(SIGNING_KEY, text.encode("utf-8"), hashlib.sha256).digest()).decode()


@dataclass
class KiroReply:
    """What the scripted model answers.

    `reasoning` is a list of blocks, each signed separately; `redacted` adds a redacted block;
    `tool_calls` are `{"name", "input": dict | str, "id"?}`; `pieces` is how many events each text
    is cut into. `usage` adds a `metricsEvent` with those token figures.
    """

    text: str = "Hello! I am Claude, served through Kiro."
    reasoning: list[str] = field(default_factory=list)
    redacted: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    pieces: int = 3
    context_percent: float = 1.5
    usage: dict[str, int] | None = None


def _cut(text: str, pieces: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i:i + size] for i in range(0, len(text), size)]


def reply_frames(reply: KiroReply, *, truncated: bool = False) -> list[bytes]:
    frames: list[bytes] = []
    for block in reply.reasoning:
        frames += [event_frame("reasoningContentEvent", {"text": piece}) for piece in _cut(block, reply.pieces)]
        frames.append(event_frame("reasoningContentEvent", {"signature": sign(block)}))
    if reply.redacted:
        frames.append(event_frame("reasoningContentEvent", {"redactedContent": reply.redacted}))
    frames += [event_frame("assistantResponseEvent", {"content": piece}) for piece in _cut(reply.text, reply.pieces)]
    for index, call in enumerate(reply.tool_calls):
        call_id = call.get("id") or f"tooluse_emu{index:02d}{uuid.uuid4().hex[:14]}"
        name = call["name"]
        arguments = call["input"] if isinstance(call["input"], str) else json.dumps(call["input"])
        head = {"name": name, "toolUseId": call_id}
        frames += [event_frame("toolUseEvent", {**head, "input": piece}) for piece in _cut(arguments, reply.pieces)]
        frames.append(event_frame("toolUseEvent", {**head, "stop": True}))
    if truncated:
        return frames
    if reply.usage is not None:
        frames.append(event_frame("metricsEvent", dict(reply.usage)))
    frames.append(event_frame("meteringEvent", {"unit": "credit", "unitPlural": "credits", "usage": 0.17}))
    frames.append(event_frame("contextUsageEvent", {"contextUsagePercentage": reply.context_percent}))
    return frames
