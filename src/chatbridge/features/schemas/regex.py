"""Regular expressions from schemas, run by RE2: linear time, whatever the pattern.

Python's `re` backtracks: `^(a+)+$` against 25 characters took 2.4 s, holding the GIL the whole
time (so a worker thread would not have helped the event loop). RE2 never backtracks, and so
refuses what needs it (lookaround, backreferences); a schema using those is refused at ingress
rather than validated some other way. RE2's syntax is also closer to the ECMA-262 dialect
JSON Schema specifies (`\\p{L}` works, `\\d` is ASCII); its `\\uXXXX` escapes are translated.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would write every refused pattern to stderr
_OPTIONS.never_capture = True  # validation only asks "does it match"
_OPTIONS.max_mem = 4 << 20  # per pattern (RE2 default: 8 MiB); a near-limit pattern keeps ~2 MiB


# ECMA-262's `\uXXXX` and `\u{X...}` escapes, which RE2 writes `\x{...}` (a `\\` pair is skipped).
_ECMA_ESCAPE = re.compile(r"\\(?:(\\)|u\{([0-9A-Fa-f]{1,6})\}|u([0-9A-Fa-f]{4}))")


def _re2_syntax(pattern: str) -> str:
    if "\\u" not in pattern:
        return pattern
    return _ECMA_ESCAPE.sub(lambda m: "\\\\" if m.group(1) else "\\x{" + (m.group(2) or m.group(3)) + "}", pattern)


class PatternRejected(ValueError):
    """A pattern RE2 cannot run; the message says why, in RE2's words."""


@functools.lru_cache(maxsize=64)  # so the cache holds at most ~128 MiB
def compile_pattern(pattern: str) -> re2._Regexp[str]:
    """The compiled pattern (cached: agents resend the same schemas every turn)."""
    try:
        return re2.compile(_re2_syntax(pattern), _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternRejected(reason) from None


def search(pattern: str, text: str) -> bool:
    """Whether `pattern` matches somewhere in `text`, as JSON Schema's `pattern` asks."""
    return compile_pattern(pattern).search(text) is not None


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be used, or None."""
    try:
        compile_pattern(pattern)
    except PatternRejected as exc:
        return (
            f"the pattern {pattern!r} is not supported ({exc}); patterns run on RE2, which has no "
            "lookaround and no backreferences"
        )
    return None


def _is_regex(instance: object) -> bool:
    if isinstance(instance, str):
        compile_pattern(instance)
    return True


@functools.cache
def format_checker(cls: Any) -> Any:
    """`cls`'s format checker, with `regex` meaning "RE2 compiles it", for metaschema checks."""
    checker = jsonschema.FormatChecker(formats=())
    checker.checkers = dict(cls.FORMAT_CHECKER.checkers)
    checker.checks("regex", raises=PatternRejected)(_is_regex)
    return checker
