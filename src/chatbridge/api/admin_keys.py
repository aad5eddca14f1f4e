"""Admin routes for client keys and their usage (admin key required, as for every `/admin/` route).

    GET    /admin/keys                  every key, masked (never the key itself), with its limits
    POST   /admin/keys                  add a key: {"name", "key"?, "models"?, limits...}; the key is answered once
    DELETE /admin/keys/{name}           revoke a key added here (file and VALID_API_KEY keys: 409)
    GET    /admin/usage[?key=NAME]      requests, input/output tokens and errors per key, provider and model

Additions and revocations are kept in the state store, so with REDIS_URL every replica shares
them; each sees a change within a second.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from chatbridge.api.admin import error, success
from chatbridge.features.clientkeys import ClientKey, ClientKeys, KeyConflict, KeysFileError

_MAX_BODY = 64 * 1024


def install(app: FastAPI) -> None:
    routes = [
        ("GET", "/admin/keys", list_keys, "Every client key (masked) with its models and limits"),
        ("POST", "/admin/keys", add_key, "Add a client key (generated unless given); the key is shown once"),
        ("DELETE", "/admin/keys/{name}", revoke_key, "Revoke a client key added through the admin API"),
        ("GET", "/admin/usage", usage, "Usage per client key, provider and model (?key=NAME for one key)"),
    ]
    for method, path, handler, summary in routes:
        app.add_api_route(path, handler, methods=[method], tags=["admin"], summary=summary)


def _keys(request: Request) -> ClientKeys:
    keys: ClientKeys = request.app.state.runtime.keys
    return keys


def key_view(key: ClientKey, now: dt.datetime | None = None) -> dict[str, Any]:
    limits = key.limits
    return {
        "name": key.name,
        "key": key.hint,  # masked: the first 6 and last 4 characters at most, or the digest's start
        "source": key.source,
        "revocable": key.source == "api",
        "models": list(limits.models) if limits.models is not None else None,
        "requests_per_minute": limits.requests_per_minute,
        "tokens_per_day": limits.tokens_per_day,
        "max_concurrent_streams": limits.max_concurrent_streams,
        "expires_at": limits.expires_at.isoformat() if limits.expires_at else None,
        "expired": key.expired(now),
        "created_at": key.created_at,
    }


async def list_keys(request: Request) -> Response:
    keys = _keys(request)
    await keys.reload_store()
    now = dt.datetime.now(dt.UTC)
    data: dict[str, Any] = {"keys": [key_view(k, now) for k in keys.keys]}
    if keys.file is not None:
        data["file"] = {"path": str(keys.file), "last_reload_error": keys.last_reload_error}
    return success(data)


async def add_key(request: Request) -> Response:
    body = await request.body()
    if len(body) > _MAX_BODY:
        return error("The request body is too large for a key.", 413)
    try:
        entry = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        return error("The body must be a JSON object: {\"name\": ..., \"key\"?: ..., \"models\"?: [...], limits...}", 400)
    if not isinstance(entry, dict):
        return error("The body must be a JSON object: {\"name\": ..., \"key\"?: ..., \"models\"?: [...], limits...}", 400)
    try:
        key, value = await _keys(request).add(entry)
    except KeysFileError as exc:
        return error(f"Invalid key: {exc}", 400)
    except KeyConflict as exc:
        return error(exc.message, exc.status)
    view = {**key_view(key), "key": value}
    return success(view, f"Client key {key.name!r} added; its key is shown only in this answer", status=201)


async def revoke_key(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        key = await _keys(request).revoke(name)
    except KeyConflict as exc:
        return error(exc.message, exc.status)
    return success(key_view(key), f"Client key {key.name!r} revoked")


async def usage(request: Request) -> Response:
    keys = _keys(request)
    name = request.query_params.get("key")
    await keys.usage.flush()  # this replica's latest figures first
    rows = await keys.usage.read(name)
    totals = {f: sum(r[f] for r in rows) for f in ("requests", "input_tokens", "output_tokens", "errors")}
    return success({"usage": rows, "totals": totals, **({"key": name} if name is not None else {})})
