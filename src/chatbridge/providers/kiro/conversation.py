"""A chat history reshaped into what Kiro accepts: a pure function with no I/O.

Kiro answers "400 Improperly formed request" unless the history starts with a user turn,
alternates user and assistant, ends with the current user turn, has no empty content, answers
every tool use in the very next turn in the order the uses were made, and has no tool result
without its use. Clients send all of these: two user turns in a row, tool results in any order,
a prefilled assistant turn, an interrupted tool call. `normalise` fixes each case without
dropping what the user said.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from chatbridge.core.errors import InvalidRequest
from chatbridge.core.types import ImagePart, Message, ReasoningPart, RedactedReasoningPart
from chatbridge.providers.kiro.tools import clean_input

EMPTY = "(empty)"  # what an otherwise empty turn says
CONTINUE = "Continue"  # the user's turn after a prefilled assistant message
RESULTS_ONLY = "Tool results provided."
EMPTY_RESULT = "(empty result)"
MISSING_RESULT = "(no result was given for this tool call)"
IMAGE_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})
_DATA_URL = re.compile(r"^data:image/([A-Za-z0-9.+-]+);base64,(.*)$", re.DOTALL)


@dataclass(slots=True)
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(slots=True)
class ToolResult:
    tool_use_id: str
    text: str
    status: Literal["success", "error"] = "success"


@dataclass(slots=True)
class Image:
    format: str
    data: str  # base64, no `data:` prefix


@dataclass(slots=True)
class Thought:
    """Reasoning from an earlier answer, replayed only with the upstream's own signature (or redacted)."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None


@dataclass(slots=True)
class UserTurn:
    text: str = ""
    images: list[Image] = field(default_factory=list)
    results: list[ToolResult] = field(default_factory=list)


@dataclass(slots=True)
class AssistantTurn:
    text: str = ""
    tool_uses: list[ToolUse] = field(default_factory=list)
    thoughts: list[Thought] = field(default_factory=list)


Turn = UserTurn | AssistantTurn


@dataclass(slots=True)
class Conversation:
    history: list[Turn]
    current: UserTurn

    @property
    def tool_names(self) -> list[str]:
        """Names of the tools the history used, in order, each once."""
        return list(dict.fromkeys(u.name for t in self.history if isinstance(t, AssistantTurn) for u in t.tool_uses))

    @property
    def has_thoughts(self) -> bool:
        return any(isinstance(t, AssistantTurn) and t.thoughts for t in self.history)

    def without_thoughts(self) -> Conversation:
        """The same conversation with no replayed reasoning (after the upstream refused a signature)."""
        history: list[Turn] = [
            AssistantTurn(t.text, t.tool_uses) if isinstance(t, AssistantTurn) else t for t in self.history
        ]
        return Conversation(history, self.current)


def normalise(messages: list[Message]) -> Conversation:
    """`messages` as Kiro's rules want them; raises `InvalidRequest` for content Kiro cannot take."""
    system, turns = _turns(messages)
    turns = _merged(turns)
    if not turns or isinstance(turns[0], AssistantTurn):
        turns.insert(0, UserTurn())
    if isinstance(turns[-1], AssistantTurn):  # a prefill: Kiro's current message must be the user's
        turns.append(UserTurn(CONTINUE))
    _pair_tool_results(turns)
    if system:
        first = turns[0]
        assert isinstance(first, UserTurn)
        first.text = f"{system}\n\n{first.text}" if first.text.strip() else system
    for turn in turns:
        _fill(turn)
    current = turns.pop()
    assert isinstance(current, UserTurn)
    return Conversation(turns, current)


def _turns(messages: list[Message]) -> tuple[str, list[Turn]]:
    """Leading system messages become the system prompt; later ones stay where they are, as user text."""
    system: list[str] = []
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        role = message.role
        if role in ("system", "developer"):
            if turns:
                turns.append(UserTurn(message.text))
            elif message.text.strip():
                system.append(message.text)
        elif role == "user":
            turns.append(UserTurn(message.text, _images(message, index)))
        elif role == "tool":  # its images go with the turn: Kiro's tool results hold text only
            result = ToolResult(message.tool_call_id or "", message.text or EMPTY_RESULT,
                                "error" if message.is_error else "success")
            turns.append(UserTurn(images=_images(message, index), results=[result]))
        else:
            turns.append(AssistantTurn(message.text, [_tool_use(c.id, c.name, c.arguments) for c in message.tool_calls],
                                       signed_thoughts(message)))
    return "\n\n".join(system), turns


def signed_thoughts(message: Message) -> list[Thought]:
    """Reasoning of an assistant message that can be replayed: signed thinking and redacted thinking.

    Unsigned reasoning (an OpenAI client's `reasoning_content`, a thinking block without its
    signature) cannot be: Kiro refuses a missing or forged signature, so it is left out.
    """
    if not isinstance(message.content, list):
        return []
    thoughts: list[Thought] = []
    for part in message.content:
        if isinstance(part, ReasoningPart) and part.signature:
            thoughts.append(Thought(part.text, part.signature))
        elif isinstance(part, RedactedReasoningPart) and part.data:
            thoughts.append(Thought(redacted=part.data))
    return thoughts


def _tool_use(call_id: str, name: str, arguments: str) -> ToolUse:
    try:
        parsed = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        parsed = {}
    return ToolUse(call_id, name, clean_input(parsed) if isinstance(parsed, dict) else {})


def _images(message: Message, index: int) -> list[Image]:
    if not isinstance(message.content, list):
        return []
    images: list[Image] = []
    for part_index, part in enumerate(message.content):
        if isinstance(part, ImagePart):
            images.append(_image(part.url, f"messages[{index}].content[{part_index}].image_url.url"))
    return images


def _image(url: str, param: str) -> Image:
    """An image as Kiro takes it: bytes (base64) of png, jpeg, gif or webp; never a URL to fetch."""
    match = _DATA_URL.match(url.strip())
    if match is None:
        raise InvalidRequest(f"Invalid value for '{param}': Kiro takes images only as base64 data URLs "
                             "(data:image/png;base64,...), not links.", param=param, code="invalid_value")
    kind = match.group(1).lower()
    kind = "jpeg" if kind == "jpg" else kind
    if kind not in IMAGE_FORMATS:
        raise InvalidRequest(f"Invalid value for '{param}': image/{kind} is not supported (png, jpeg, gif or webp).",
                             param=param, code="invalid_value")
    data = re.sub(r"\s+", "", match.group(2))
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"Invalid value for '{param}': the image is not valid base64.", param=param,
                             code="invalid_value") from None
    return Image(kind, data)


def _merged(turns: list[Turn]) -> list[Turn]:
    """Consecutive turns of the same role become one."""
    out: list[Turn] = []
    for turn in turns:
        last = out[-1] if out else None
        if isinstance(turn, UserTurn) and isinstance(last, UserTurn):
            last.text = _join(last.text, turn.text)
            last.images += turn.images
            last.results += turn.results
        elif isinstance(turn, AssistantTurn) and isinstance(last, AssistantTurn):
            last.text = _join(last.text, turn.text)
            last.tool_uses += turn.tool_uses
            last.thoughts += turn.thoughts
        else:
            out.append(turn)
    return out


def _join(first: str, second: str) -> str:
    if not first.strip():
        return second
    if not second.strip():
        return first
    return f"{first}\n\n{second}"


def _pair_tool_results(turns: list[Turn]) -> None:
    """Every tool use answered in the next turn, in order; results without their use become text."""
    previous: Turn | None = None
    for turn in turns:
        if isinstance(turn, UserTurn):
            uses = previous.tool_uses if isinstance(previous, AssistantTurn) else []
            _order_results(turn, uses)
        previous = turn


def _order_results(turn: UserTurn, uses: list[ToolUse]) -> None:
    given: dict[str, ToolResult] = {}
    orphans: list[ToolResult] = []
    wanted = {use.id for use in uses}
    for result in turn.results:
        if result.tool_use_id in wanted and result.tool_use_id not in given:
            given[result.tool_use_id] = result
        elif result.tool_use_id not in given:  # a duplicate answer to one use is dropped
            orphans.append(result)
    ordered: list[ToolResult] = []
    for use in uses:
        if use.id in given:
            ordered.append(given.pop(use.id))
        elif use.id not in {r.tool_use_id for r in ordered}:
            ordered.append(ToolResult(use.id, MISSING_RESULT, "error"))
    turn.results = ordered
    for orphan in orphans:
        turn.text = _join(turn.text, f"[Result of tool call {orphan.tool_use_id}]\n{orphan.text}")


def _fill(turn: Turn) -> None:
    """No empty content anywhere: Kiro refuses it."""
    if isinstance(turn, UserTurn):
        for result in turn.results:
            if not result.text.strip():
                result.text = EMPTY_RESULT
    if not turn.text.strip():
        turn.text = RESULTS_ONLY if isinstance(turn, UserTurn) and turn.results else EMPTY
