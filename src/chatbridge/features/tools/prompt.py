"""The injected tool prompt: the tool list, the one call format, and the follow-up messages.

Each tool is described twice on purpose: a short per-parameter summary (type, required,
allowed values, default, description), which models follow better than raw schema, and the
exact JSON schema, so nothing (nested objects, patterns, bounds) is lost.

`TOOLIFY_CUSTOM_PROMPT` replaces `DEFAULT_TEMPLATE`. Placeholders, substituted literally (a
template may contain other braces, e.g. JSON examples):

- `{tool_list}` (or `{tools_list}`): the tool descriptions;
- `{call_format}`: the call-format instructions, with this request's tags and an example;
- `{open_tag}` (or `{trigger_signal}`) and `{close_tag}`: the bare tags, e.g.
  `<tool_call_k3x9qz>`, for templates that explain the format themselves.

A template without a tool-list placeholder gets the list appended, and one that mentions
neither `{call_format}` nor the open tag gets the format appended: the parser only finds calls
in the format the model was shown. The `tool_choice` instruction is always appended.
"""

from __future__ import annotations

import json
from typing import Any

from chatbridge.core.types import ToolChoice, ToolSpec
from chatbridge.features.tools.markers import CallMarker

DEFAULT_TEMPLATE = """\
# Tools

You can call the tools listed below. Tools are only called through the exact block format \
described after the list; there is no other way to call them.

{tool_list}

# How to call a tool

{call_format}"""

_FORMAT = """\
To call a tool, write this block, with the tags exactly as shown:

{open_tag}
{{"name": "TOOL_NAME", "arguments": {{"PARAMETER": "VALUE"}}}}
{close_tag}

- "name" is one of the tool names above. "arguments" is a JSON object that follows that \
tool's JSON schema: every required parameter, the right types, only the allowed values.
- The block must hold valid JSON: double quotes, and quotes, backslashes and newlines inside \
strings escaped (\\", \\\\, \\n).
- {several}
- You may write a short sentence before the first block. After the last block, stop: write \
nothing else, and never write a tool result yourself; results are sent back to you.
- Write these tags only to make a real call: never to talk about them, never inside code \
fences, never in your reasoning.
- Each result comes back in a user message as {result_open}...{result_close}. Use it to \
continue the task."""

_SEVERAL = "To call several tools at once, write one block per call, one after another."
_SINGLE = "Call at most one tool per reply: write a single block."

_DISABLED = """\
# Tools

Tool calling is disabled for this reply: answer in plain text and do not write any tool \
call. Earlier tool calls in this conversation appear as {open_tag}...{close_tag} blocks and \
their results as {result_open}...{result_close} blocks; use them as context."""


def describe_tools(tools: list[ToolSpec]) -> str:
    return "\n\n".join(_describe_tool(tool) for tool in tools)


def _describe_tool(tool: ToolSpec) -> str:
    lines = [f"## {tool.name}"]
    if tool.description.strip():
        lines.append(tool.description.strip())
    properties = tool.parameters.get("properties")
    required = set(tool.parameters.get("required") or ())
    if isinstance(properties, dict) and properties:
        lines.append("Parameters:")
        lines.extend(_describe_parameter(n, s, n in required) for n, s in properties.items())
    else:
        lines.append("Parameters: none.")
    schema = json.dumps(tool.parameters or {"type": "object"}, ensure_ascii=False)
    lines.append(f"JSON schema of the arguments: {schema}")
    return "\n".join(lines)


def _describe_parameter(name: str, schema: Any, required: bool) -> str:
    if not isinstance(schema, dict):
        return f"- {name} ({'required' if required else 'optional'})"
    status = "required" if required else "optional"
    text = f"- {name} ({_type_name(schema)}, {status})"
    details = []
    if isinstance(schema.get("description"), str) and schema["description"].strip():
        details.append(schema["description"].strip())
    if isinstance(schema.get("enum"), list):
        allowed = ", ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
        details.append(f"Allowed values: {allowed}.")
    if "default" in schema:
        details.append(f"Default: {json.dumps(schema['default'], ensure_ascii=False)}.")
    return text + (": " + " ".join(details) if details else "")


def _type_name(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array of {_type_name(schema['items'])}"
    if isinstance(kind, str):
        return kind
    for key in ("anyOf", "oneOf"):  # pydantic and strict-mode schemas write Optional[X] this way
        options = schema.get(key)
        if isinstance(options, list) and options and all(isinstance(o, dict) for o in options):
            return " or ".join(dict.fromkeys(_type_name(o) for o in options))
    return "any"


def call_format(marker: CallMarker, *, parallel: bool) -> str:
    return _FORMAT.format(
        open_tag=marker.open_tag,
        close_tag=marker.close_tag,
        several=_SEVERAL if parallel else _SINGLE,
        result_open=marker.result_open("TOOL_NAME", "CALL_ID"),
        result_close=marker.result_close,
    )


def choice_instruction(choice: ToolChoice) -> str:
    if choice.mode == "required":
        return "For this reply you must call at least one tool."
    if choice.mode == "function":
        return f"For this reply you must call the tool {choice.name!r}, and no other tool."
    return "Call a tool only when it helps; if none is needed, answer normally, without any block."


def build_tool_prompt(
    tools: list[ToolSpec],
    choice: ToolChoice,
    marker: CallMarker,
    *,
    parallel: bool = True,
    template: str | None = None,
) -> str:
    """The system prompt that offers `tools` (for `tool_choice` other than none)."""
    tool_list = describe_tools(tools)
    fmt = call_format(marker, parallel=parallel)
    text = template if template is not None else DEFAULT_TEMPLATE
    if "{tool_list}" not in text and "{tools_list}" not in text:
        text += "\n\n{tool_list}"
    if not any(p in text for p in ("{call_format}", "{open_tag}", "{trigger_signal}")):
        text += "\n\n{call_format}"
    for placeholder, value in (
        ("{tool_list}", tool_list),
        ("{tools_list}", tool_list),
        ("{call_format}", fmt),
        ("{open_tag}", marker.open_tag),
        ("{trigger_signal}", marker.open_tag),
        ("{close_tag}", marker.close_tag),
    ):
        text = text.replace(placeholder, value)
    return f"{text}\n\n{choice_instruction(choice)}"


def disabled_prompt(marker: CallMarker) -> str:
    """The system prompt for `tool_choice: none`: no tool is callable, history stays readable."""
    return _DISABLED.format(
        open_tag=marker.open_tag,
        close_tag=marker.close_tag,
        result_open=marker.result_open("TOOL_NAME", "CALL_ID"),
        result_close=marker.result_close,
    )


def corrective_message(choice: ToolChoice, marker: CallMarker) -> str:
    """The user turn of the corrective round, after an answer without the required call."""
    target = f"the tool {choice.name!r}" if choice.mode == "function" else "a tool"
    return (
        f"You answered without calling a tool, but this reply must call {target}. Call it now, "
        f"using exactly the block format from the instructions ({marker.open_tag} ... "
        f"{marker.close_tag}), and write nothing after the last block."
    )


def repair_message(problems: list[str], marker: CallMarker) -> str:
    """The user turn of a repair round: what was wrong and how to answer."""
    listed = "\n".join(f"- {problem}" for problem in problems)
    return (
        f"Your tool call could not be used:\n{listed}\n\n"
        "Write the tool call again, corrected: every call you want to make, one "
        f"{marker.open_tag} ... {marker.close_tag} block each, with valid JSON arguments that "
        "follow the tool's schema, and nothing after the last block. If you did not mean to "
        "call a tool, answer again without any tool call block."
    )
