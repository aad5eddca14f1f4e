"""Checking the tools a client offers, before anything is sent upstream.

A tool list the gateway cannot honour is the client's mistake and deserves a clear 400, not a
500 and not a silent surprise later: two tools with the same name (a call could not say which
one it means), or `parameters` that are not a JSON schema for an object (the arguments could
never be validated, and OpenAI itself rejects them).

Checking a schema against its metaschema costs about 2 ms, and agents resend the same tools on
every turn, so verdicts are cached by the schema's canonical JSON text.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import orjson
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]

from chatbridge.core.types import ToolSpec

_CACHE_SIZE = 4096  # verdicts kept, by schema digest


@dataclass(frozen=True, slots=True)
class ToolProblem:
    """Why `tools[index]` cannot be used; `field` is `name` or `parameters`."""

    index: int
    field: str
    message: str


def tool_problem(tools: list[ToolSpec]) -> ToolProblem | None:
    """The first problem in `tools`, or None when every tool can be offered."""
    seen: dict[str, int] = {}
    for index, tool in enumerate(tools):
        if tool.name in seen:
            message = (
                f"the function name '{tool.name}' is used by tools[{seen[tool.name]}] and "
                f"tools[{index}]; function names must be unique"
            )
            return ToolProblem(index, "name", message)
        seen[tool.name] = index
        problem = schema_problem(tool.parameters)
        if problem is not None:
            return ToolProblem(index, "parameters", f"invalid schema for function '{tool.name}': {problem}")
    return None


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` is not a usable JSON schema for a tool's arguments, or None."""
    if not schema:
        return None  # no parameters: the tool takes none
    try:
        text = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # the only way JSON-parsed data fails to re-encode
        return "integers must fit in 64 bits"
    key = hashlib.blake2b(text, digest_size=16).digest()  # MCP schemas can be tens of KB: keep a digest
    if key in _verdicts:
        return _verdicts[key]
    verdict = _check(schema)
    if len(_verdicts) >= _CACHE_SIZE:
        del _verdicts[next(iter(_verdicts))]  # oldest first
    _verdicts[key] = verdict
    return verdict


_verdicts: dict[bytes, str | None] = {}


def _check(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if kind is not None and kind != "object":
        return f"the arguments schema must have type 'object', not {orjson.dumps(kind).decode()}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unknown `$schema` URI warns, then falls back
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:  # already the best match among the metaschema's errors
        where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
        return f"at 'parameters{where}': {exc.message}"
    return None
