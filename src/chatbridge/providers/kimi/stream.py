"""Kimi's Connect chat stream, read: frames (patches against the web client's chat model) in, events out.

Each message frame is a patch: `{"op": "set"|"append", "mask": "<path>[,<path>...]", <root>}`
(kimi.md §4.2 and its corrections). Patches are applied per block id: `set` replaces a block's
text (and carries its first piece), `append` extends it; masks may be comma-joined lists.
`block.text*` is the answer, `block.think.content` the reasoning (`block.think.summary` is a
title, tool and stage blocks are the web client's own). The first frame names the chat, a
`message` frame the assistant message (the next turn's `parent_id`; its `blocks`, when it carries
them, are the answer sent whole: each is set, and a block streamed again afterwards is not repeated),
`message.refs` the search sources, `notification` a degrade to a lighter model. `{"heartbeat": {}}`
is ignored, and so is a gRPC-web trailer (flag 0x80). `done` ends the reply, and so does the
end-of-stream frame (flag 0x02), which may carry an error; a body that ends cleanly after the
assistant message's status said COMPLETED is a whole reply too (§4.2's robust rule).

Memory stays flat: a block keeps the length and a hash of its text, never the text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from chatbridge.core import upstream_json
from chatbridge.core.connect import ConnectFrame
from chatbridge.core.errors import UpstreamProtocolError, UpstreamTransportError
from chatbridge.core.types import ConversationRef, Event, Finish, Notice, ReasoningDelta, TextDelta
from chatbridge.providers.kimi.citations import CitationRewriter, Sources
from chatbridge.providers.kimi.errors import connect_error

_TEXT_MASKS = frozenset({"", "block", "block.text", "block.text.content"})
_THINK_MASKS = frozenset({"", "block", "block.think", "block.think.content"})
_DEGRADE = "TYPE_MODEL_DEGRADE"
_COMPLETED = "MESSAGE_STATUS_COMPLETED"
_TRAILER = 0x80  # gRPC-web's trailer bit


@dataclass(slots=True)
class _Block:
    """What one block has said so far: its length and a hash, so a `set` can tell what is new.

    A block whose text came whole (in a `message` frame) may be streamed again from its start: a
    `set` shorter than what was said begins that re-send, and nothing of it is new until it has
    passed what was said (`said`, meanwhile; the length and hash are the re-sent text's).
    """

    length: int = 0
    digest: Any = field(default_factory=hashlib.sha1)
    thinking: bool = False  # an older stream marks reasoning as text with `flags: "thinking"`
    whole: bool = False  # its text came whole, in a `message` frame
    said: int = 0  # while it is sent again: how much of it the client has already

    def append(self, text: str) -> str:
        before = self.length
        self.length += len(text)
        self.digest.update(text.encode("utf-8", "surrogatepass"))
        if not self.said:
            return text
        if self.length <= self.said:
            return ""
        new, self.said = text[max(0, self.said - before):], 0
        return new

    def replace(self, text: str, *, whole: bool = False) -> str:
        """The part of `text` not yet sent: all of it if it neither extends what was sent nor re-sends it."""
        old = self.length
        extends = len(text) >= old and hashlib.sha1(text[:old].encode("utf-8", "surrogatepass")).digest() == self.digest.digest()
        said = max(self.said, old)
        self.whole = self.whole or whole
        resent = extends or (self.whole and len(text) <= said)
        self.length, self.digest, self.said = 0, hashlib.sha1(), said if resent else 0
        return self.append(text)


class KimiStreamReader:
    """The `AnswerReader` of Kimi's chat RPC; see the module docstring."""

    def __init__(self, provider: str = "kimi", credential_id: str | None = None) -> None:
        self.provider = provider
        self.credential_id = credential_id
        self.done = False
        self.chat_id: str | None = None
        self.message_id: str | None = None
        self.status: str | None = None
        self._said = False  # any answer or reasoning text
        self._blocks: dict[str, _Block] = {}
        self._sources = Sources()
        self._citations = CitationRewriter(self._sources)

    # -- frames -----------------------------------------------------------------------------------

    def read(self, frame: ConnectFrame) -> list[Event]:
        if frame.flags & _TRAILER:  # gRPC-web's trailer (headers as text, not JSON): skipped, as chopper1026 does
            return []
        if frame.compressed:  # we never offer compression, so the upstream must not use it
            raise self._protocol("sent a compressed frame, which was not asked for")
        try:
            obj = orjson.loads(frame.data)
        except orjson.JSONDecodeError:
            try:
                obj = upstream_json.reread(frame.data)
            except orjson.JSONDecodeError:
                raise self._protocol("sent a frame that is not JSON") from None
        if not isinstance(obj, dict):
            raise self._protocol("sent a frame that is not a JSON object")
        if obj.get("error"):
            raise connect_error(self.provider, obj["error"], self.credential_id)
        if frame.end_stream:
            self.done = True
            return []
        return self._patch(obj)

    def _patch(self, obj: dict[str, Any]) -> list[Event]:
        if "done" in obj:
            self.done = True
            return []
        if "heartbeat" in obj:
            return []
        masks = _masks(obj.get("mask"))
        op = obj.get("op")
        events: list[Event] = []
        chat = obj.get("chat")
        if isinstance(chat, dict) and isinstance(chat.get("id"), str) and chat["id"]:
            self.chat_id = chat["id"]
        message = obj.get("message")
        if isinstance(message, dict):
            events += self._message(message, masks)
        block = obj.get("block")
        if isinstance(block, dict):
            events += self._block(op, masks, block)
        notification = obj.get("notification")
        if isinstance(notification, dict):
            events += self._notification(notification)
        return events

    def _message(self, message: dict[str, Any], masks: list[str]) -> list[Event]:
        role = message.get("role")
        message_id = message.get("id")
        if role == "assistant" or (role is None and self.message_id is None and "message.status" in masks):
            if isinstance(message_id, str) and message_id:
                self.message_id = message_id
        if role not in (None, "assistant"):
            return []  # the user's message, echoed
        if isinstance(message.get("status"), str):
            self.status = message["status"]
        refs = message.get("refs")
        if isinstance(refs, dict):
            for key in ("searchChunks", "usedSearchChunks"):
                chunks = refs.get(key)
                if isinstance(chunks, list):
                    for chunk in chunks:
                        self._sources.add(chunk)
        references = message.get("references")
        if isinstance(references, list):
            for reference in references:
                self._sources.add(reference)
        events: list[Event] = []
        blocks = message.get("blocks")
        if role == "assistant" and isinstance(blocks, list):  # a whole message: each block set whole
            for block in blocks:
                if isinstance(block, dict):
                    events += self._block("set", _WHOLE, block, whole=True)
        return events

    def _block(self, op: object, masks: list[str], block: dict[str, Any], *, whole: bool = False) -> list[Event]:
        events: list[Event] = []
        text = block.get("text")
        if text is not None and isinstance(text, dict):
            content_masked = not _TEXT_MASKS.isdisjoint(masks)
            if content_masked or "block.text.flags" in masks:
                state = self._state("text:", block)
                flags = text.get("flags")
                if isinstance(flags, str):  # "thinking", then "answer" on the same block
                    state.thinking = flags == "thinking"
                content = _content(text, op, state)
                if content_masked and content is not None:
                    piece = state.append(content) if op == "append" else state.replace(content, whole=whole)
                    if piece:
                        self._said = True
                        if state.thinking:
                            events.append(ReasoningDelta(piece))
                        elif shown := self._citations.feed(piece):
                            events.append(TextDelta(shown))
        think = block.get("think")
        if think is not None and isinstance(think, dict) and not _THINK_MASKS.isdisjoint(masks):
            state = self._state("think:", block)
            content = _content(think, op, state)
            if content is not None:
                piece = state.append(content) if op == "append" else state.replace(content, whole=whole)
                if piece:
                    self._said = True
                    events.append(ReasoningDelta(piece))
        search = block.get("search")
        if search is not None and isinstance(search, dict) and isinstance(search.get("webPages"), list):
            for page in search["webPages"]:
                self._sources.add(page)
        return events

    def _state(self, kind: str, block: dict[str, Any]) -> _Block:
        key = kind + str(block.get("id", ""))
        state = self._blocks.get(key)
        if state is None:
            state = self._blocks[key] = _Block()
        return state

    def _notification(self, notification: dict[str, Any]) -> list[Event]:
        if notification.get("type") != _DEGRADE:
            return []
        detail = next((notification[k] for k in ("content", "message", "title", "text", "desc")
                       if isinstance(notification.get(k), str) and notification[k]), "")
        return [Notice("model_degraded", detail[:300])]

    # -- the end ----------------------------------------------------------------------------------

    def finish(self) -> list[Event]:
        """At the end of the body: a reply whose message was COMPLETED is whole without `done` (kimi.md §4.2)."""
        if not self.done and self.status != _COMPLETED:
            raise UpstreamTransportError(
                f"{self.provider} upstream broke off its reply (the stream ended without done or an end-of-stream frame)",
                provider=self.provider, credential_id=self.credential_id,
            )
        if not self._said and self.message_id is None:
            raise self._protocol("ended its reply without any answer")
        events: list[Event] = []
        tail = self._citations.flush() + self._sources.footnotes()
        if tail:
            events.append(TextDelta(tail))
        if self.chat_id and self.message_id:
            events.append(ConversationRef(self.chat_id, self.message_id))
        events.append(Finish("stop"))
        return events

    def read_body(self, body: bytes) -> Iterable[Event]:
        """A JSON body instead of a stream: Connect's error shape, or nothing we can use."""
        try:
            obj = upstream_json.loads(body)
        except orjson.JSONDecodeError:
            raise self._protocol("answered with a body that is neither a Connect stream nor JSON") from None
        if isinstance(obj, dict) and (obj.get("code") or obj.get("error")):
            raise connect_error(self.provider, obj.get("error") or obj, self.credential_id)
        raise self._protocol("answered with JSON instead of a Connect stream")

    def _protocol(self, what: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"{self.provider} upstream {what}", provider=self.provider,
                                     credential_id=self.credential_id)


def _content(part: dict[str, Any], op: object, state: _Block) -> str | None:
    """A block part's text; a `set` without any on a block that came whole begins sending it again."""
    content = part.get("content")
    if isinstance(content, str):
        return content
    return "" if op != "append" and state.whole else None


def _masks(mask: object) -> list[str]:
    """`"a,b"` → `["a", "b"]`; no mask at all is the empty mask (a whole object)."""
    if not isinstance(mask, str) or not mask:
        return _WHOLE
    if "," not in mask:
        return [mask.strip()]
    return [m.strip() for m in mask.split(",") if m.strip()] or _WHOLE


_WHOLE = [""]
