"""Checking a parsed call against the tools the client offered.

A call is invalid when its tool is unknown, when `tool_choice` names another tool, when its
arguments are not a JSON object, or when they fail the tool's JSON schema. The error text is
written for the model (it is shown to it in the repair round), so it names the tool, the
failing path and what was expected.

A broken schema is the client's problem, not the model's: ingress refuses it with a 400
(`schemas.tool_problem`), and should one get here anyway the tool is not validated rather than
blocking every call to it. Validation itself is bounded (`features.schemas.validator`): when
it cannot finish within its budget, the call is let through unvalidated, as a call that is
still invalid after its repair rounds is.

Validation can take a while on a big argument, so callers on an event loop run it in a
worker thread (the pipeline runs `ToolEmulator.end_round` there).
"""

from __future__ import annotations

import logging
from typing import Any

from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

from chatbridge.core.types import ToolSpec
from chatbridge.features.schemas import ValidationIncomplete, errors_of, loads, validator_for
from chatbridge.features.tools.envelope import ParsedCall
from chatbridge.features.tools.schemas import schema_problem

log = logging.getLogger("chatbridge.tools")

_MAX_ERRORS = 3
_MAX_MESSAGE = 300  # characters of one error: jsonschema quotes the whole failing value


class CallValidator:
    """Validates calls against a request's tools; validators are built once per tool."""

    def __init__(self, tools: list[ToolSpec], *, forced: str | None = None) -> None:
        self._tools = {tool.name: tool for tool in tools}
        self._forced = forced
        self._validators: dict[str, Any] = {}  # jsonschema ships no type hints

    def error(self, call: ParsedCall) -> str | None:
        """Why `call` cannot be returned to the client, or None when it is valid."""
        if call.name not in self._tools:
            known = ", ".join(sorted(self._tools)) or "none"
            return f"there is no tool named {call.name!r} (available tools: {known})"
        if self._forced is not None and call.name != self._forced:
            return f"this reply must call the tool {self._forced!r}, not {call.name!r}"
        if call.error is not None:
            return call.error
        try:
            arguments = loads(call.arguments)
        except ValueError as exc:
            return f"the arguments are not valid JSON: {exc}"
        if not isinstance(arguments, dict):
            return "the arguments must be a JSON object"
        return self._schema_error(call.name, arguments)

    def _schema_error(self, name: str, arguments: dict[str, Any]) -> str | None:
        validator = self._validator(name)
        if validator is None:
            return None
        try:
            found = errors_of(validator, arguments)
        except ValidationIncomplete as exc:
            log.warning("the arguments of a call to %r were not validated: %s", name, exc)
            return None
        errors = sorted(found, key=lambda e: list(e.path))
        if not errors:
            return None
        shown = "; ".join(_describe(error) for error in errors[:_MAX_ERRORS])
        more = len(errors) - _MAX_ERRORS
        return shown + (f" (and {more} more)" if more > 0 else "")

    def _validator(self, name: str) -> Any:
        if name not in self._validators:
            self._validators[name] = _build(self._tools[name].parameters)
        return self._validators[name]


def _build(schema: dict[str, Any]) -> Any:
    if not schema or schema_problem(schema) is not None:  # the check is cached per schema
        return None
    return validator_for(schema)


def _describe(error: ValidationError) -> str:
    path = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = error.message if len(error.message) <= _MAX_MESSAGE else error.message[:_MAX_MESSAGE] + "…"
    return f"arguments{path}: {message}"
