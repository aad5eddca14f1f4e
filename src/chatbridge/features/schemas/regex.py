"""Regular expressions from schemas, run by RE2: linear time, whatever the pattern.

Python's `re` backtracks: `^(a+)+$` against 25 characters took 2.4 s, holding the GIL the whole
time (so a worker thread would not have helped the event loop). RE2 never backtracks, and so
refuses what needs it (lookaround, backreferences); a schema using those is refused at ingress
rather than validated some other way. RE2's syntax is also closer to the ECMA-262 dialect
JSON Schema specifies (`\\p{L}` works, `\\d` is ASCII).
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would write every refused pattern to stderr
_OPTIONS.never_capture = True  # validation only asks "does it match"
_OPTIONS.max_mem = 1 << 20  # per pattern: bounds what the compiled-pattern cache can hold


class PatternRejected(ValueError):
    """A pattern RE2 cannot run; the message says why, in RE2's words."""


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re2._Regexp[str]:
    """The compiled pattern (cached: agents resend the same schemas every turn)."""
    try:
        return re2.compile(pattern, _OPTIONS)
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
