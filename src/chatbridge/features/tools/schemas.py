"""Checking the tools a client offers, before anything is sent upstream.

A tool list the gateway cannot honour is the client's mistake and deserves a clear 400, not a
500 and not a silent surprise later: two tools with the same name (a call could not say which
one it means), or `parameters` that are not a usable JSON schema for an object (see
`features.schemas.check`: bounded, valid, local references only, patterns RE2 can run).
Problems name the tool; each dialect words its own 400 (`root` names the schema's field in
the messages: `parameters` for OpenAI, `input_schema` for Anthropic).

Checking a schema against its metaschema costs about half a millisecond per property, and
agents resend the same tools on every turn, so verdicts are cached by the schema's canonical
JSON text; a request whose unchecked schemas are big is parsed in a worker thread
(`core.inline_work`), so the event loop never waits for the check.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from chatbridge.core.inline_work import spend_inline
from chatbridge.core.types import ToolSpec
from chatbridge.features.schemas import MAX_TOTAL_SCHEMA_VALUES, shape_problem, validity_problem

_CACHE_SIZE = 4096  # verdicts kept, by schema digest


@dataclass(frozen=True, slots=True)
class ToolProblem:
    """Why `tools[index]` cannot be used; `field` is `name` or `parameters`."""

    index: int
    field: str
    message: str


def tool_problem(tools: list[ToolSpec], *, root: str = "parameters") -> ToolProblem | None:
    """The first problem in `tools`, or None when every tool can be offered."""
    seen: dict[str, int] = {}
    total = 0
    for index, tool in enumerate(tools):
        if tool.name in seen:
            message = (
                f"the function name '{tool.name}' is used by tools[{seen[tool.name]}] and "
                f"tools[{index}]; function names must be unique"
            )
            return ToolProblem(index, "name", message)
        seen[tool.name] = index
        problem, size = _verdict(tool.parameters, root, require_object=True)
        if problem is not None:
            return ToolProblem(index, "parameters", f"invalid schema for function '{tool.name}': {problem}")
        total += size
        if total > MAX_TOTAL_SCHEMA_VALUES:
            message = (
                f"the schemas of tools[0] to tools[{index}] hold more than {MAX_TOTAL_SCHEMA_VALUES} "
                "values together; offer fewer or smaller tools"
            )
            return ToolProblem(index, "parameters", message)
    return None


def schema_problem(schema: dict[str, Any], *, root: str = "parameters", require_object: bool = True) -> str | None:
    """Why `schema` is not a usable JSON schema (for a tool's arguments by default), or None."""
    return _verdict(schema, root, require_object=require_object)[0]


def _verdict(schema: dict[str, Any], root: str, *, require_object: bool) -> tuple[str | None, int]:
    if not schema:
        return None, 0  # no parameters: the tool takes none
    try:
        text = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # the only ways JSON-parsed data fails to re-encode: too deep, or a huge integer
        shape = shape_problem(schema)
        return (shape if isinstance(shape, str) else "integers must fit in 64 bits"), 0
    # MCP schemas can be tens of KB: keep a digest
    key = hashlib.blake2b(text + f"\0{root}\0{require_object}".encode(), digest_size=16).digest()
    cached = _verdicts.get(key)
    if cached is not None:
        return cached
    verdict = _check(schema, root, require_object)
    if len(_verdicts) >= _CACHE_SIZE:
        del _verdicts[next(iter(_verdicts))]  # oldest first
    _verdicts[key] = verdict
    return verdict


_verdicts: dict[bytes, tuple[str | None, int]] = {}


def _check(schema: dict[str, Any], root: str, require_object: bool) -> tuple[str | None, int]:
    kind = schema.get("type")
    if require_object and kind is not None and kind != "object":
        return f"the arguments schema must have type 'object', not {orjson.dumps(kind).decode()}", 0
    size = shape_problem(schema)
    if isinstance(size, str):
        return size, 0
    spend_inline(size)  # on the event loop, a big unchecked schema moves the parse to a worker
    return validity_problem(schema, root), size
