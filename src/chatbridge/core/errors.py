"""The error tree, shaped by what the gateway does next.

`UpstreamError`s carry the provider and credential they happened on; the pipeline asks the
provider to classify them into a `Failure`, which decides retry, cooldown or disabling.
`ClientError`s are the client's fault and map straight to a 4xx envelope.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from chatbridge.core.secrets import redact


class ChatbridgeError(Exception):
    """Base of every error the gateway raises on purpose."""


# --- The client's fault ------------------------------------------------------------------------


class ClientError(ChatbridgeError):
    """A request we refuse; `status`, `param` and `code` go straight into the error envelope."""

    status = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(ClientError):
    pass


class ModelNotFound(ClientError):
    status = 404

    def __init__(self, model: str, reason: str | None = None, hint: str | None = None) -> None:
        shown = model if len(model) <= 200 else model[:200] + "…"  # never echo a megabyte back
        why = f": {reason}." if reason else " or is not served by this gateway."
        super().__init__(
            f"The model '{shown}' does not exist{why}" + (f" {hint}" if hint else ""),
            param="model",
            code="model_not_found",
        )


class RequestTooLarge(ClientError):
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body exceeds the limit of {limit} bytes.", code="request_too_large")


# --- The upstream's fault ----------------------------------------------------------------------


class UpstreamError(ChatbridgeError):
    """Something went wrong talking to an upstream; carries where it happened.

    The message is redacted when the error is made: it is built from what the upstream said,
    which may echo a secret back, and it goes on to logs, the admin API, the saved pool health
    and the client.
    """

    def __init__(self, message: str, *, provider: str, credential_id: str | None = None) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.credential_id = credential_id


class UpstreamTransportError(UpstreamError):
    """Connect or read failure: another credential or a retry may help."""


class UpstreamTimeout(UpstreamTransportError):
    """No connection or no first byte within REQUEST_TIMEOUT."""


class UpstreamUnreachable(UpstreamTransportError):
    """The request never reached the upstream (DNS, refused connection, bad URL): not the credential's fault."""


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int,
        body: str = "",
        retry_after: float | None = None,
        credential_id: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, credential_id=credential_id)
        self.status = status
        self.body = body
        self.retry_after = retry_after


class UpstreamProtocolError(UpstreamError):
    """The upstream sent something we cannot parse; retrying the same thing will not help."""


class UpstreamRedirect(UpstreamProtocolError):
    """The upstream answered a redirect, which the gateway does not follow: the configured address
    is not where the API is (or an upstream is steering requests elsewhere). No credential is to blame."""

    def __init__(self, message: str, *, provider: str, status: int, credential_id: str | None = None) -> None:
        super().__init__(message, provider=provider, credential_id=credential_id)
        self.status = status


class UpstreamChallenge(UpstreamProtocolError):
    """A firewall or bot-protection page (Cloudflare's "Just a moment...") answered instead of the API:
    the gateway's address or traffic was blocked, not its credential. Like a redirect, no credential is
    to blame; it is not an `UpstreamStatusError`, so no classifier reads its 403 as a refused token."""

    def __init__(self, message: str, *, provider: str, status: int, credential_id: str | None = None) -> None:
        super().__init__(message, provider=provider, credential_id=credential_id)
        self.status = status


class FrameTooLarge(ChatbridgeError):
    """A sans-IO decoder was handed a frame (an SSE event, an envelope) over its size limit.

    Raised by decoders that do not know which upstream they read; `stream_answer` turns it
    into an `UpstreamProtocolError` naming the upstream and the setting.
    """

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} larger than {limit} bytes")
        self.what = what
        self.limit = limit


class PoolExhausted(ChatbridgeError):
    """No usable credential: every one is disabled or cooling down."""

    def __init__(self, provider: str, message: str, retry_after: float | None = None, *, excluded_only: bool = False) -> None:
        super().__init__(message)
        self.provider = provider
        self.message = message
        self.retry_after = retry_after
        # True when usable credentials remain but this request already tried (excluded) them all.
        self.excluded_only = excluded_only


class PoolBusy(PoolExhausted):
    """Every usable credential is at its stream cap (or being refreshed) and none freed up in time.

    Busy is not a failure: no credential is penalised, and the client may simply retry.
    """


class ToolCallDeclined(UpstreamError):
    """A tool call was required (`tool_choice` required or named) and the model answered without one."""


class ClientDisconnected(ChatbridgeError):
    """The client left while its answer was being prepared or sent; nobody is waiting."""


# --- Classification ----------------------------------------------------------------------------


class FailureKind(str, enum.Enum):
    AUTH = "auth"  # credential dead: disable it, try the next one
    RATE_LIMITED = "rate_limited"  # cool the credential down, try the next one
    TRANSIENT = "transient"  # count one failure, try again
    BAD_REQUEST = "bad_request"  # the client's fault: no retry, no penalty
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"  # the service is down: retrying elsewhere may help
    BUSY = "busy"  # the account is answering another request: wait for it or use another, no penalty


@dataclass(slots=True, frozen=True)
class Failure:
    """The classified outcome of a failed attempt."""

    kind: FailureKind
    message: str
    status: int | None = None
    retry_after: float | None = None
    # "credential", "provider" (e.g. a per-IP limit) or "request" (what the attempt's plan sent was stale,
    # e.g. a conversation the upstream no longer has: the next attempt rebuilds it, any credential will do)
    scope: str = "credential"
    code: str | None = None  # the API error code the client sees, when the upstream's reason names one
    renewable: bool = True  # False: an auth failure a token refresh cannot cure (a suspended account)

    @property
    def is_retryable(self) -> bool:
        return self.kind is not FailureKind.BAD_REQUEST

    @property
    def penalises_credential(self) -> bool:
        return self.kind in (FailureKind.AUTH, FailureKind.TRANSIENT)


class AttemptsFailed(ChatbridgeError):
    """Every attempt failed before producing output; carries the last error and its classification."""

    def __init__(self, error: UpstreamError, failure: Failure, attempts: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.failure = failure
        self.attempts = attempts
