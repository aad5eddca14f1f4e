"""Loopback HTTP emulators of upstream chat services, for tests and benchmarks.

``K2ThinkEmulator`` speaks K2Think / Open WebUI; ``KiroEmulator`` speaks Kiro's
binary event stream and its logins; ``OpenAICompatEmulator`` is a plain
OpenAI-compatible server. Each runs in a background thread on
127.0.0.1 (``start()`` returns the base URL; also context managers).

Exports are resolved lazily so that ``python -m tests.upstreams.<module>``
does not import the module twice (runpy warns about that).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .common import RecordedRequest, Reply
    from .k2think import K2ThinkEmulator
    from .kimi import KimiEmulator, KimiReply
    from .kiro import KiroEmulator
    from .openai_compat import OpenAICompatEmulator
    from .server import BackgroundServer

__all__ = [
    "BackgroundServer",
    "K2ThinkEmulator",
    "KimiEmulator",
    "KimiReply",
    "KiroEmulator",
    "OpenAICompatEmulator",
    "RecordedRequest",
    "Reply",
]

_HOMES = {
    "BackgroundServer": ".server",
    "K2ThinkEmulator": ".k2think",
    "KimiEmulator": ".kimi",
    "KimiReply": ".kimi",
    "KiroEmulator": ".kiro",
    "OpenAICompatEmulator": ".openai_compat",
    "RecordedRequest": ".common",
    "Reply": ".common",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
