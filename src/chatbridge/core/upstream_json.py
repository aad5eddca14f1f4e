"""JSON from an upstream, read with orjson, and still read when its strings hold lone surrogates.

Servers that build JSON from UTF-16 strings (JavaScript's, Java's) can split an emoji's
surrogate pair between two stream events and escape each half (`"\\ud83d"`). orjson refuses
those, which would end a whole answer over one character; such a document is read again by
the standard library, and each lone half becomes U+FFFD. Only a document orjson refused pays
for the second reading.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_SURROGATE_ESCAPE = (b"\\ud", b"\\uD")


def loads(data: bytes | str) -> Any:
    """Like `orjson.loads` (raising its `JSONDecodeError`), but lone surrogates become U+FFFD."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return reread(data)


def reread(data: bytes | str) -> Any:
    """A document orjson refused, read again if lone surrogates were why; else its `JSONDecodeError`.

    Per-event readers call `orjson.loads` themselves and this in their `except`, so an event
    costs no extra call."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if not any(escape in raw for escape in _SURROGATE_ESCAPE):
        raise orjson.JSONDecodeError("not JSON", raw.decode("utf-8", "replace"), 0)
    try:
        parsed = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise orjson.JSONDecodeError("not JSON", raw.decode("utf-8", "replace"), 0) from None
    return _mended(parsed)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # orjson refuses NaN and Infinity; so does this reading


def mend_surrogates(text: str) -> str:
    """`text` with each lone surrogate (half of a split pair) replaced by U+FFFD, as a UTF-8 decoder
    would make it: no UTF-8 encoder accepts one, so a response holding it could not be sent."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _mended(value: Any) -> Any:
    """`value` with every lone surrogate in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return mend_surrogates(value)
    if isinstance(value, list):
        return [_mended(item) for item in value]
    if isinstance(value, dict):
        return {_mended(key): _mended(item) for key, item in value.items()}
    return value
