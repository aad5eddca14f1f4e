"""The `generateAssistantResponse` request body, from a normalised conversation.

`conversationState` holds the history and the current user message; tools go on the current
message only (plus stand-ins for tools the history used that the request no longer offers,
since Kiro refuses tool traffic for tools it was not told about); `profileArn` is always set.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from chatbridge.core.types import ToolSpec
from chatbridge.core.usage import estimate_tokens
from chatbridge.providers.kiro.conversation import AssistantTurn, Conversation, Thought, UserTurn
from chatbridge.providers.kiro.tools import ToolNames, sanitize_schema, tool_description

ORIGIN = "AI_EDITOR"
HIDDEN_PROMPT_TOKENS = 2_000  # Kiro's own system prompt, which the model reads too
IMAGE_TOKENS = 1_600  # about what Claude counts for a large image
_STAND_IN = "A tool used earlier in this conversation."


@dataclass(frozen=True, slots=True)
class BodyOptions:
    model_id: str
    profile_arn: str | None
    tools: tuple[ToolSpec, ...] = ()
    offer_tools: bool = True  # False for `tool_choice: none`: the history's tools still get stand-ins
    effort: str | None = None


def build_body(conversation: Conversation, options: BodyOptions, names: ToolNames) -> dict[str, Any]:
    model = options.model_id
    current = _user(conversation.current, model, names)
    specs = _tool_specs(conversation, options, names)
    context = current["userInputMessage"].setdefault("userInputMessageContext", {})
    if specs:
        context["tools"] = specs
    if not context:
        del current["userInputMessage"]["userInputMessageContext"]
    state: dict[str, Any] = {
        "chatTriggerType": "MANUAL",
        "conversationId": str(uuid.uuid4()),
        "agentTaskType": "vibe",
        "currentMessage": current,
    }
    history = [_user(t, model, names) if isinstance(t, UserTurn) else _assistant(t, names) for t in conversation.history]
    if history:  # an empty list is refused by some deployments
        state["history"] = history
    body: dict[str, Any] = {"conversationState": state}
    if options.profile_arn:
        body["profileArn"] = options.profile_arn
    if options.effort:
        body["additionalModelRequestFields"] = {"output_config": {"effort": options.effort}}
    return body


def _user(turn: UserTurn, model: str, names: ToolNames) -> dict[str, Any]:
    message: dict[str, Any] = {"content": turn.text, "modelId": model, "origin": ORIGIN}
    if turn.images:
        message["images"] = [{"format": i.format, "source": {"bytes": i.data}} for i in turn.images]
    if turn.results:
        message["userInputMessageContext"] = {"toolResults": [
            {"toolUseId": r.tool_use_id, "content": [{"text": r.text}], "status": r.status} for r in turn.results
        ]}
    return {"userInputMessage": message}


def _assistant(turn: AssistantTurn, names: ToolNames) -> dict[str, Any]:
    message: dict[str, Any] = {"content": turn.text}
    if turn.tool_uses:
        message["toolUses"] = [{"toolUseId": u.id, "name": names.upstream(u.name), "input": u.input} for u in turn.tool_uses]
    thought = _replayable(turn.thoughts)
    if thought is not None:
        message["reasoningContent"] = thought
    return {"assistantResponseMessage": message}


def _replayable(thoughts: list[Thought]) -> dict[str, Any] | None:
    """The first signed (or redacted) reasoning block, as `reasoningContent`."""
    for thought in thoughts:
        if thought.redacted:
            return {"redactedContent": thought.redacted}
        if thought.signature:
            return {"reasoningText": {"text": thought.text, "signature": thought.signature}}
    return None


def _tool_specs(conversation: Conversation, options: BodyOptions, names: ToolNames) -> list[dict[str, Any]]:
    offered = list(options.tools) if options.offer_tools else []
    specs = [_spec(names.upstream(t.name), tool_description(t.name, t.description), sanitize_schema(t.parameters))
             for t in offered]
    known = {t.name for t in offered}
    for name in conversation.tool_names:
        if name not in known:
            known.add(name)
            specs.append(_spec(names.upstream(name), _STAND_IN, sanitize_schema({})))
    return specs


def _spec(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"toolSpecification": {"name": name, "description": description, "inputSchema": {"json": schema}}}


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """What the model reads: every text, tool spec and tool exchange sent, Kiro's hidden prompt, images by count."""
    state = body.get("conversationState", {})
    messages = [*state.get("history", ()), state.get("currentMessage", {})]
    tokens = HIDDEN_PROMPT_TOKENS
    for entry in messages:
        message = entry.get("userInputMessage") or entry.get("assistantResponseMessage") or {}
        tokens += 4 + estimate_tokens(message.get("content", ""))
        tokens += IMAGE_TOKENS * len(message.get("images", ()))
        for key in ("toolUses", "reasoningContent"):
            if key in message:
                tokens += estimate_tokens(orjson.dumps(message[key]).decode())
        context = message.get("userInputMessageContext") or {}
        for key in ("tools", "toolResults"):
            if key in context:
                tokens += estimate_tokens(orjson.dumps(context[key]).decode())
    return tokens
