"""Fitting a request's content to what its upstream can take.

Anthropic clients send blocks some upstreams have no place for: documents (extracted to text
for upstreams that cannot read them, `features.documents`) and earlier turns' reasoning
(passed back only to upstreams that verify its signature; for the others it is dropped, as
it would be refused or mean nothing). Messages needing no change are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from chatbridge.core.types import (
    ChatRequest,
    ContentPart,
    DocumentPart,
    Message,
    ReasoningPart,
    RedactedReasoningPart,
    TextPart,
)
from chatbridge.features.documents import document_as_text


@dataclass(frozen=True, slots=True)
class UpstreamAbilities:
    reads_documents: bool = False
    verifies_signatures: bool = False


def needs_fitting(request: ChatRequest, abilities: UpstreamAbilities) -> bool:
    """Cheap check, run on every request: is there any part this upstream cannot take?"""
    for message in request.messages:
        content = message.content
        if isinstance(content, list):
            for part in content:
                if isinstance(part, DocumentPart) and not abilities.reads_documents:
                    return True
                if isinstance(part, (ReasoningPart, RedactedReasoningPart)) and not abilities.verifies_signatures:
                    return True
    return False


def fit_content(request: ChatRequest, abilities: UpstreamAbilities) -> ChatRequest:
    """A copy whose messages hold only what the upstream can take (may parse PDFs: run off the loop)."""
    counter = [0]
    messages = [_fit_message(m, abilities, counter) for m in request.messages]
    return replace(request, messages=messages)


def _fit_message(message: Message, abilities: UpstreamAbilities, counter: list[int]) -> Message:
    content = message.content
    if not isinstance(content, list):
        return message
    parts: list[ContentPart] = []
    changed = False
    for part in content:
        if isinstance(part, DocumentPart) and not abilities.reads_documents:
            counter[0] += 1
            where = f"document {counter[0]}" + (f" ('{part.title[:80]}')" if part.title else "")
            parts.append(document_as_text(part, where))
            changed = True
        elif isinstance(part, (ReasoningPart, RedactedReasoningPart)) and not abilities.verifies_signatures:
            changed = True
        else:
            parts.append(part)
    if not changed:
        return message
    if all(isinstance(p, TextPart) and p.cache_control is None for p in parts):
        return replace(message, content="".join(p.text for p in parts if isinstance(p, TextPart)))
    return replace(message, content=parts)
