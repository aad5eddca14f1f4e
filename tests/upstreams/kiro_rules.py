"""The request rules Kiro enforces with "400 Improperly formed request", as the protocol notes collect them.

`check_body` returns None for a request Kiro would take, else `(status, body, rule)`: the rule
names what was wrong, for tests to assert on (Kiro itself says only "Improperly formed request").
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from .kiro_frames import sign

IMPROPER = {"message": "Improperly formed request.", "reason": "REQUEST_BODY_INVALID"}
NO_PROFILE = {"message": "profileArn is required for this request."}
BAD_SIGNATURE = {"message": "Invalid signature in thinking block.", "reason": "THINKING_SIGNATURE_INVALID"}
NO_EXTRA_FIELDS = {"message": "The model does not support additionalModelRequestFields."}
BAD_MODEL = {"message": "Invalid model. Please select a different model to continue.", "reason": "INVALID_MODEL_ID"}
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FORBIDDEN_SCHEMA_KEYS = frozenset({"anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "$schema", "additionalProperties"})

Problem = tuple[int, dict[str, Any], str]


def check_body(body: Any, models: set[str], effort_models: set[str]) -> Problem | None:
    if not isinstance(body, dict) or not isinstance(body.get("conversationState"), dict):
        return 400, IMPROPER, "no conversationState"
    if not isinstance(body.get("profileArn"), str) or not body["profileArn"].startswith("arn:"):
        return 400, NO_PROFILE, "no profileArn"
    state = body["conversationState"]
    current = (state.get("currentMessage") or {}).get("userInputMessage")
    if not isinstance(current, dict):
        return 400, IMPROPER, "currentMessage is not a userInputMessage"
    model = current.get("modelId")
    if model not in models:
        return 400, BAD_MODEL, f"unknown model {model!r}"
    if "additionalModelRequestFields" in body and model not in effort_models:
        return 400, NO_EXTRA_FIELDS, f"{model} takes no additionalModelRequestFields"
    history = state.get("history", [])
    if not isinstance(history, list) or (not history and "history" in state):
        return 400, IMPROPER, "history is empty or not a list"
    turns = [*history, {"userInputMessage": current}]
    return _check_turns(turns, current)


def _check_turns(turns: list[Any], current: dict[str, Any]) -> Problem | None:
    tools = (current.get("userInputMessageContext") or {}).get("tools") or []
    problem = _check_tools(tools)
    if problem is not None:
        return problem
    tool_names = {t["toolSpecification"]["name"] for t in tools}
    expected: list[str] = []  # tool-use ids the next user turn must answer, in order
    for index, turn in enumerate(turns):
        role = "user" if "userInputMessage" in turn else "assistant" if "assistantResponseMessage" in turn else None
        if role is None:
            return 400, IMPROPER, f"turn {index} is neither a user nor an assistant message"
        if (role == "user") != (index % 2 == 0):
            return 400, IMPROPER, f"turn {index} breaks the alternation (user first, then assistant, ...)"
        message = turn["userInputMessage" if role == "user" else "assistantResponseMessage"]
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            return 400, IMPROPER, f"turn {index} has empty content"
        if role == "user":
            problem = _check_user(message, expected, index)
            expected = []
        else:
            problem, expected = _check_assistant(message, tool_names, index)
        if problem is not None:
            return problem
    return None


def _check_user(message: dict[str, Any], expected: list[str], index: int) -> Problem | None:
    results = (message.get("userInputMessageContext") or {}).get("toolResults") or []
    ids = [r.get("toolUseId") for r in results]
    if ids != expected:
        return 400, IMPROPER, f"turn {index} answers tool uses {ids}, expected {expected} in that order"
    for result in results:
        content = result.get("content")
        if not (isinstance(content, list) and content and all(isinstance(c.get("text"), str) and c["text"] for c in content)):
            return 400, IMPROPER, f"turn {index} has a tool result with empty content"
        if result.get("status") not in ("success", "error"):
            return 400, IMPROPER, f"turn {index} has a tool result without a status"
    for image in message.get("images") or []:
        if image.get("format") not in ("png", "jpeg", "gif", "webp"):
            return 400, IMPROPER, f"turn {index} has an image of format {image.get('format')!r}"
        try:
            base64.b64decode((image.get("source") or {}).get("bytes", ""), validate=True)
        except (binascii.Error, ValueError):
            return 400, IMPROPER, f"turn {index} has image bytes that are not base64"
    return None


def _check_assistant(message: dict[str, Any], tool_names: set[str], index: int) -> tuple[Problem | None, list[str]]:
    uses = message.get("toolUses") or []
    for use in uses:
        if use.get("name") not in tool_names:
            return (400, IMPROPER, f"turn {index} uses the tool {use.get('name')!r}, which is not defined"), []
        if not isinstance(use.get("input"), dict) or "" in use["input"]:
            return (400, IMPROPER, f"turn {index} has a tool use whose input is not an object"), []
    reasoning = message.get("reasoningContent")
    if reasoning is not None:
        text = (reasoning.get("reasoningText") or {}) if isinstance(reasoning, dict) else {}
        if "redactedContent" not in reasoning and text.get("signature") != sign(text.get("text", "")):
            return (400, BAD_SIGNATURE, f"turn {index} replays thinking with a signature Kiro did not make"), []
    return None, [u.get("toolUseId") for u in uses]


def _check_tools(tools: list[Any]) -> Problem | None:
    seen: set[str] = set()
    for tool in tools:
        spec = tool.get("toolSpecification") if isinstance(tool, dict) else None
        if not isinstance(spec, dict):
            return 400, IMPROPER, "a tool without toolSpecification"
        name = spec.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name in seen:
            return 400, IMPROPER, f"the tool name {name!r} is invalid, too long or repeated"
        seen.add(name)
        description = spec.get("description")
        if not isinstance(description, str) or not description.strip() or len(description) > 10_000:
            return 400, IMPROPER, f"the tool {name} has an empty or over-long description"
        schema = (spec.get("inputSchema") or {}).get("json")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return 400, IMPROPER, f"the tool {name} has no object schema"
        bad = _schema_problem(schema)
        if bad is not None:
            return 400, IMPROPER, f"the tool {name}'s schema {bad}"
    return None


def _schema_problem(node: Any) -> str | None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _FORBIDDEN_SCHEMA_KEYS:
                return f"uses {key}"
            if value is None:
                return f"has a null {key}"
            found = _schema_problem(value)
            if found is not None:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _schema_problem(value)
            if found is not None:
                return found
    return None
