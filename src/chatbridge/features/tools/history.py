"""Rewriting tool history into messages an upstream without tool support understands.

The original proxies lost tool results here: they kept only role and content, so `role: tool`
messages were skipped and assistant `tool_calls` vanished. This module keeps every message:

- an assistant message with `tool_calls` keeps its text and gets its calls appended as call
  blocks in the same format the prompt teaches, so the model sees what it did before;
- a `role: tool` message becomes a user message whose body is wrapped in
  `<tool_result_TOKEN name="..." call_id="...">`; the name comes from the assistant call with
  the same id in this request (then the message's own `name`). Consecutive results are merged
  into one user message, because several upstreams reject or fold runs of user turns;
- every other message is passed on untouched (same object).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from chatbridge.core.types import ContentPart, Message, TextPart
from chatbridge.features.tools.markers import CallMarker

UNKNOWN_TOOL = "unknown"


def rewrite_history(messages: list[Message], marker: CallMarker) -> list[Message]:
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    out: list[Message] = []
    previous_was_result = False
    for message in messages:
        if message.role == "tool":
            result = _tool_result(message, names, marker)
            if previous_was_result:
                out[-1] = _merge(out[-1], result)
            else:
                out.append(result)
            previous_was_result = True
            continue
        previous_was_result = False
        if message.role == "assistant" and message.tool_calls:
            out.append(_assistant_with_calls(message, marker))
        else:
            out.append(message)
    return out


def with_system_prompt(messages: list[Message], prompt: str) -> list[Message]:
    """Add `prompt` after the client's leading system text, keeping a single system turn.

    Appended to the last leading system (or developer) message rather than sent as a second
    system message: many chat templates accept only one system message, first (Mistral's
    raises on any other), so a second one would break every agent request that has
    instructions. Without a leading system message, the prompt becomes one.
    """
    index = 0
    while index < len(messages) and messages[index].role in ("system", "developer"):
        index += 1
    if index == 0:
        return [Message(role="system", content=prompt), *messages]
    last = messages[index - 1]
    content: str | list[ContentPart]
    if isinstance(last.content, list):
        content = [*last.content, TextPart(f"\n\n{prompt}")]
    else:
        text = (last.content or "").rstrip()
        content = f"{text}\n\n{prompt}" if text else prompt
    return [*messages[: index - 1], replace(last, content=content), *messages[index:]]


def render_calls(calls: list[tuple[str, str]], marker: CallMarker) -> str:
    """Call blocks for (name, arguments JSON text) pairs, one after another."""
    return "\n".join(marker.render_call(name, _arguments_value(args)) for name, args in calls)


def _assistant_with_calls(message: Message, marker: CallMarker) -> Message:
    blocks = render_calls([(call.name, call.arguments) for call in message.tool_calls], marker)
    text = message.text.rstrip()
    return replace(message, content=f"{text}\n\n{blocks}" if text else blocks, tool_calls=[])


def _arguments_value(arguments: str) -> Any:
    """The arguments as JSON (an object normally); text that is not JSON is kept as a string."""
    if not arguments.strip():
        return {}
    try:
        return json.loads(arguments, strict=False)
    except ValueError:
        return arguments


def _tool_result(message: Message, names: dict[str, str], marker: CallMarker) -> Message:
    call_id = message.tool_call_id or ""
    name = names.get(call_id) or message.name or UNKNOWN_TOOL
    head = marker.result_open(name, call_id or UNKNOWN_TOOL) + ("\nError: the tool failed.\n" if message.is_error else "\n")
    tail = "\n" + marker.result_close
    content: str | list[ContentPart]
    if isinstance(message.content, list):
        content = [TextPart(head), *message.content, TextPart(tail)]
    else:
        content = head + (message.content or "") + tail
    return Message(role="user", content=content)


def _merge(first: Message, second: Message) -> Message:
    a, b = first.content, second.content
    if isinstance(a, str) and isinstance(b, str):
        return Message(role="user", content=f"{a}\n\n{b}")
    parts = [*_parts(a), TextPart("\n\n"), *_parts(b)]
    return Message(role="user", content=parts)


def _parts(content: str | list[ContentPart] | None) -> list[ContentPart]:
    if isinstance(content, list):
        return list(content)
    return [TextPart(content or "")]
