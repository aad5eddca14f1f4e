"""Invalid settings as one line per variable, naming it, never a traceback."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from chatbridge.core.secrets import redact


def describe(exc: ValidationError, *, with_input: bool = False, prefix: str = "  ") -> str:
    lines = []
    for item in exc.errors(include_url=False):
        name = ".".join(str(p) for p in item["loc"]).upper() or "settings"
        message = str(item["msg"]).removeprefix("Value error, ")
        got = f" (got {_short(item.get('input'))})" if with_input else ""
        lines.append(f"{prefix}{name}: {message}{got}")
    return "\n".join(lines)


def _short(value: object) -> str:
    text = redact(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def not_utf8(env_file: Path, exc: UnicodeDecodeError) -> str:
    """A `.env` saved in another encoding (Latin-1, UTF-16): which byte, and what to do, instead of a traceback."""
    return f"{env_file} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
