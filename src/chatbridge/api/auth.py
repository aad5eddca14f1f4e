"""Which key opens which path, the check itself (constant time, Bearer or x-api-key), and the refusal."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from chatbridge.api.admin_page import is_page
from chatbridge.api.errors import ApiError, error_body_for_path
from chatbridge.core.types import ModelInfo
from chatbridge.features.clientkeys import ClientKey, ClientKeys

RawHeaders = Iterable[tuple[bytes, bytes]]
KeyKind = Literal["client", "admin"]

_ADMIN_HINT = ("/admin/ routes need the admin key (ADMIN_API_KEY, or the key generated in DATA_DIR/admin_key "
               "and printed at first start)")


def key_kind(path: str) -> KeyKind | None:
    """Client keys open the API, admin keys (only) `/admin` (but its web page); other paths are open (None)."""
    if path.startswith("/v1/") or path == "/chat/completions":
        return "client"
    if path.startswith("/admin/") or path == "/admin":
        return None if is_page(path) else "admin"  # the page holds no data; what it reads takes the key
    return None


METRICS_PATH = "/metrics"
_METRICS_HINT = ("/metrics needs the admin key (ADMIN_API_KEY, or the key generated in DATA_DIR/admin_key), "
                 "unless METRICS_PUBLIC=true")


class KeyPolicy:
    """Which key opens a path, the check (`check`), and what a refused request is told.

    Client keys come from a `ClientKeys` ring (VALID_API_KEY, CLIENT_KEYS_FILE, the admin API),
    which may change while the gateway runs; admin keys are fixed at start. `/metrics` takes the
    admin key, unless `metrics_public` (METRICS_PUBLIC) opens it.
    """

    def __init__(self, client_keys: ClientKeys, admin_keys: Sequence[str] = (), metrics_public: bool = False) -> None:
        self.ring = client_keys
        self.admin = [k.encode() for k in admin_keys if client_keys.find(k.encode()) is None]
        self.metrics_public = metrics_public

    def guards(self, path: str) -> bool:
        """Whether `path` takes a key at all (the API, /admin, and /metrics unless it is public)."""
        return key_kind(path) is not None or (path == METRICS_PATH and not self.metrics_public)

    def check(self, path: str, presented: bytes | None, request_id: str, state: dict[str, Any],
              headers: RawHeaders = ()) -> tuple[int, bytes] | None:
        """None when `presented` opens `path` (a client key is put in `state["client_key"]`), else the refusal
        (in the envelope `headers` ask for: an `anthropic-version` client gets Anthropic's on any path)."""
        if path == METRICS_PATH:
            return None if key_ok(presented, self.admin) else self.refusal(path, presented, request_id, headers)
        kind = key_kind(path)
        if kind is None:
            return None
        if kind == "admin":
            return None if key_ok(presented, self.admin) else self.refusal(path, presented, request_id, headers)
        key = self.ring.find(presented)
        if key is None:
            return self.refusal(path, presented, request_id, headers)
        if key.expired():
            expires = key.limits.expires_at.isoformat() if key.limits.expires_at else ""
            error = ApiError(401, f"The API key {key.name!r} expired at {expires}.", "invalid_request_error", "expired_api_key")
            return 401, error_body_for_path(path, error, request_id, headers)
        state["client_key"] = key
        return None

    def refusal(self, path: str, presented: bytes | None, request_id: str, headers: RawHeaders = ()) -> tuple[int, bytes]:
        """The 401 in the envelope of the API the request belongs to. Every wrong key gets the same answer
        (a client key on /admin/ included), so it tells nothing about which keys exist."""
        if path == METRICS_PATH:
            message = f"{'Missing' if not presented else 'Invalid'} admin key: {_METRICS_HINT}."
            error = ApiError(401, message, "invalid_request_error", "invalid_api_key")
            return 401, error_body_for_path(path, error, request_id, headers)
        admin = key_kind(path) == "admin"
        if not presented:
            message = "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
            if admin:
                message = f"Missing admin key: {_ADMIN_HINT}; send it as 'Authorization: Bearer <key>'."
        elif admin:
            message = f"Invalid admin key: {_ADMIN_HINT}; a client key does not open them."
        else:
            message = "Invalid API key provided."
        error = ApiError(401, message, "invalid_request_error", "invalid_api_key")
        return 401, error_body_for_path(path, error, request_id, headers)


def key_policy(client_keys: ClientKeys, admin_keys: Sequence[str] = (), metrics_public: bool = False) -> KeyPolicy:
    return KeyPolicy(client_keys, admin_keys, metrics_public)


def allowed_models(scope: Mapping[str, Any], models: list[ModelInfo]) -> list[ModelInfo]:
    """The models the request's client key may use: all, unless its `models` globs say otherwise."""
    key: ClientKey | None = scope.get("state", {}).get("client_key")
    if key is None or key.models is None:
        return models
    return [m for m in models if key.allows(m.id)]


def model_allowed(scope: Mapping[str, Any], model_id: str) -> bool:
    """Whether the request's client key may use `model_id` (a model it may not use is not listed for it)."""
    key: ClientKey | None = scope.get("state", {}).get("client_key")
    return key is None or key.models is None or key.allows(model_id)


def header(headers: RawHeaders, name: bytes) -> bytes | None:
    """The first value of a (lower-case) header, as raw bytes."""
    for key, value in headers:
        if key == name:
            return value
    return None


def presented_key(headers: RawHeaders) -> bytes | None:
    auth = header(headers, b"authorization")
    if auth:
        scheme, _, value = auth.partition(b" ")
        value = value.strip()
        if scheme.lower() == b"bearer" and value:
            return value
    return header(headers, b"x-api-key")


def key_ok(presented: bytes | None, keys: Sequence[bytes]) -> bool:
    """Constant time in the key material: every configured key is compared, no early exit."""
    if not presented:
        return False
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(presented, key)
    return ok
