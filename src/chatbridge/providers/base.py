"""The provider interface: the only thing the gateway knows about an upstream.

A provider translates a `ChatRequest` into its upstream's wire protocol and the upstream's
answer into core `Event`s. It knows nothing about HTTP ingress, pools or other providers.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Callable

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import (
    Failure,
    FailureKind,
    UpstreamChallenge,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRedirect,
    UpstreamStatusError,
    UpstreamTransportError,
    UpstreamUnreachable,
)
from chatbridge.core.types import ChatRequest, Event, EventTransform, ModelInfo


class Provider(abc.ABC):
    """Base class for upstream providers.

    `stream` is an async generator: the pipeline pulls the first event before it answers the
    client, so an error raised before the first yield can still be retried elsewhere. The
    request it gets is already the upstream's: `model` is the upstream model id.
    """

    name: str = "provider"
    native_tools: bool = False
    native_response_format: bool = False  # honours `response_format` itself; else it is emulated
    native_max_tokens: bool = False  # honours `max_tokens` itself; else the gateway ends the answer there
    requires_credential: bool = True
    # What the upstream can take of an Anthropic request; the rest is fitted (features/content.py).
    reads_documents: bool = False  # PDF/text documents as such (else their text is extracted)
    verifies_signatures: bool = False  # earlier turns' signed thinking is passed back (else dropped)
    # Answers may arrive whole (a web chat that hands over a reply in one piece): stream clients
    # get long pieces paced (PSEUDO_STREAM_CHUNK_CHARS, PSEUDO_STREAM_INTERVAL_MS).
    pseudo_stream: bool = False

    @abc.abstractmethod
    def models(self) -> list[ModelInfo]:
        """Model ids this provider serves, as the upstream names them."""

    @abc.abstractmethod
    def stream(self, request: ChatRequest, credential: Credential | None) -> AsyncGenerator[Event, None]:
        """Run one attempt upstream and yield its events."""

    def classify(self, error: Exception) -> Failure:
        """Default mapping of upstream errors onto failure kinds; providers refine it."""
        return classify_http_error(error)

    def transforms(self) -> list[EventTransform]:
        """Per-attempt event transforms this upstream's answers need (e.g. splitting reasoning markup)."""
        return []

    async def astart(self) -> None:
        """Called once in the application lifespan (e.g. to start discovering models); must not block long."""

    def discovery(self) -> str | None:
        """How a discovered model list stands: "ok", "pending" or "failed: …"; None when the list is fixed."""
        return None

    def on_models_changed(self, callback: Callable[[], None]) -> None:
        """Have `callback` called whenever `models()` changes (a provider that discovers its models)."""

    async def aclose(self) -> None:
        """Release upstream connections."""


def classify_http_error(error: Exception) -> Failure:
    """The common HTTP reading: 401/403 auth, 429 rate limit, 5xx transient, other 4xx client;
    a redirect (not followed) is the upstream's address and a firewall's challenge page the gateway's
    traffic, neither any credential's fault."""
    if isinstance(error, (UpstreamRedirect, UpstreamChallenge)):
        return Failure(FailureKind.TRANSIENT, error.message, status=error.status, scope="provider")
    if isinstance(error, UpstreamStatusError):
        status = error.status
        if status in (401, 403):
            return Failure(FailureKind.AUTH, error.message, status=status)
        if status == 429:
            return Failure(FailureKind.RATE_LIMITED, error.message, status, error.retry_after)
        if status >= 500:  # an overloaded upstream's Retry-After is passed on to the client
            return Failure(FailureKind.TRANSIENT, error.message, status=status, retry_after=error.retry_after)
        return Failure(FailureKind.BAD_REQUEST, error.message, status=status)
    if isinstance(error, UpstreamUnreachable):  # never reached the upstream: no credential is to blame
        return Failure(FailureKind.UPSTREAM_UNAVAILABLE, error.message)
    if isinstance(error, (UpstreamTransportError, UpstreamProtocolError, UpstreamError)):
        return Failure(FailureKind.TRANSIENT, error.message)
    return Failure(FailureKind.TRANSIENT, f"unexpected error: {type(error).__name__}")
