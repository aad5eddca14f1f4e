"""Counting a prompt's tokens with a real tokenizer, for `count_tokens` and `message_start`.

The tokenizer is o200k_base from `bpe-openai` (GitHub's Rust `bpe` crate), whose wheel ships
the vocabulary inside its native module: tiktoken downloads its files at first use, which
fails behind a firewall. Its native module is loaded directly: the package's Python wrapper
builds tiktoken-style rank tables for every encoding at import (about 4 s and 150 MB), while
the native tokenizer loads in about 0.3 s and counts without them. No upstream here uses that
vocabulary exactly, so the count is an estimate either way, but a consistent one: both
Anthropic routes use this function. Without the package the character estimate of
`core.usage` is used, and a warning says so.

Agent clients resend the same system prompt, tools and history on every turn, so counts are
memoised per text (by length and hash, so no text is kept alive); only new text is tokenized.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from chatbridge.core.types import (
    ChatRequest,
    ContentPart,
    DocumentPart,
    ImagePart,
    Message,
    ReasoningPart,
    RedactedReasoningPart,
    TextPart,
)
from chatbridge.core.usage import estimate_tokens

log = logging.getLogger("chatbridge.tokens")

IMAGE_TOKENS = 1600  # what Anthropic charges for an image of about a megapixel, its usual cap
_MESSAGE_OVERHEAD = 4  # role and separators
_TOOL_OVERHEAD = 10
_CACHE_SIZE = 8192


def _native_tokenizer(encoding: str) -> Any:
    """bpe-openai's native tokenizer, without importing the package's wrapper."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("bpe-openai is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"_bindings{suffix}"
        if path.exists():
            native = importlib.util.spec_from_file_location("bpe_openai._bindings", path)
            assert native is not None and native.loader is not None
            module = importlib.util.module_from_spec(native)
            native.loader.exec_module(module)
            return module.tokenizer_for_encoding(encoding)
    raise ImportError(f"bpe-openai has no native module in {folder}")


class _Counter:
    """Text → token count through the tokenizer (loaded once, on first use or `warm_up`), memoised."""

    def __init__(self) -> None:
        self._count: Callable[[str], int] | None = None
        self._memo: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._lock = threading.Lock()
        self.name = ""

    def warm_up(self) -> None:
        """Load the tokenizer now (about 0.3 s: run it off the event loop, at start)."""
        with self._lock:
            if self._count is None:
                self._count = self._load()

    def _load(self) -> Callable[[str], int]:
        try:
            tokenizer = _native_tokenizer("o200k_base")
            tokenizer.count("warm")
        except Exception as exc:  # not installed, no wheel for this platform, another layout
            log.warning("tokenizer o200k_base unavailable (%s); token counts are estimates", exc)
            self.name = "estimate"
            return estimate_tokens
        self.name = "o200k_base"
        count: Callable[[str], int] = tokenizer.count
        return count

    def __call__(self, text: str) -> int:
        if not text:
            return 0
        count = self._count
        if count is None:
            self.warm_up()
            count = self._count
            assert count is not None
        if len(text) < 64:  # cheaper to count than to remember
            return count(text)
        key = (len(text), hash(text))
        memo = self._memo
        found = memo.get(key)
        if found is not None:
            memo.move_to_end(key)
            return found
        found = memo[key] = count(text)
        if len(memo) > _CACHE_SIZE:
            memo.popitem(last=False)
        return found


count_text_tokens = _Counter()


def count_prompt_tokens(request: ChatRequest) -> int:
    """The prompt's tokens: messages, tool calls and results, and the offered tools' schemas."""
    total = 0
    for message in request.messages:
        total += _MESSAGE_OVERHEAD + _message_tokens(message)
    for tool in request.tools:
        total += _TOOL_OVERHEAD + count_text_tokens(tool.name) + count_text_tokens(tool.description)
        if tool.parameters:
            total += count_text_tokens(orjson.dumps(tool.parameters).decode())
    return total


def _message_tokens(message: Message) -> int:
    content = message.content
    total = 0
    if isinstance(content, str):
        total += count_text_tokens(content)
    elif content:
        total += sum(_part_tokens(part) for part in content)
    for call in message.tool_calls:
        total += count_text_tokens(call.name) + count_text_tokens(call.arguments)
    return total


def _part_tokens(part: ContentPart) -> int:
    if isinstance(part, (TextPart, ReasoningPart)):
        return count_text_tokens(part.text)
    if isinstance(part, ImagePart):
        return IMAGE_TOKENS
    if isinstance(part, DocumentPart):
        if part.source == "text":
            return count_text_tokens(part.data)
        return len(part.data) * 3 // 16  # base64 → bytes (¾), about 4 bytes a token
    if isinstance(part, RedactedReasoningPart):
        return len(part.data) // 4
    return 0
