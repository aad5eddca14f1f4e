"""Invalid settings as a readable list naming each variable, never a traceback."""

from __future__ import annotations

from pydantic import ValidationError

from chatbridge.core.secrets import redact


def describe(exc: ValidationError, *, with_input: bool = False) -> str:
    lines = []
    for item in exc.errors(include_url=False):
        name = ".".join(str(p) for p in item["loc"]).upper() or "settings"
        got = f" (got {_short(item.get('input'))})" if with_input else ""
        lines.append(f"  {name}: {item['msg']}{got}")
    return "\n".join(lines)


def _short(value: object) -> str:
    text = redact(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."
