"""What the model is told when `response_format` is emulated, and what a repair round says."""

from __future__ import annotations

import json

from chatbridge.core.types import ResponseFormat

_ONLY_JSON = "Write only the JSON: no text before or after it, and no code fences."


def format_instruction(fmt: ResponseFormat, *, has_tools: bool) -> str:
    """The system-prompt section that asks for the answer's shape."""
    lines = ["# Response format", ""]
    if fmt.kind == "json_schema" and fmt.schema:
        named = f" ({fmt.name}{': ' + fmt.description.strip() if fmt.description else ''})" if fmt.name else ""
        lines += [
            f"Your answer must be one JSON value that follows this JSON schema{named}:",
            "",
            json.dumps(fmt.schema, ensure_ascii=False),
            "",
            "Include every property the schema requires, use the types and values it allows, and "
            "no property it does not allow. " + _ONLY_JSON,
        ]
    else:
        lines.append("Your answer must be one JSON object. " + _ONLY_JSON)
    if has_tools:
        lines += ["", "This is the shape of your final answer; to call a tool, use the tool call format instead."]
    return "\n".join(lines)


def repair_message(problem: str) -> str:
    """The user turn of the repair round, after an answer of the wrong shape."""
    return f"Your answer could not be used: {problem}\n\nAnswer again with the corrected JSON only. {_ONLY_JSON}"
