"""The original tool's `/admin/tokens/*` routes, same paths and shapes, for the registry's tokens provider."""

from __future__ import annotations

import time

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from chatbridge.api.admin import (
    UPSTREAM_ERROR_THRESHOLD,
    credential_view,
    error,
    force_refresh,
    pool_stats,
    reload,
    reset_all,
    success,
    target,
)
from chatbridge.pool.lifecycle import CONSECUTIVE_FAILURE_THRESHOLD
from chatbridge.providers.registry import TOKENS_PROVIDER


def install(app: FastAPI) -> None:
    routes = [
        ("GET", "/admin/tokens/stats", token_stats, "Token pool statistics"),
        ("GET", "/admin/tokens/consecutive-failures", consecutive_failures, "Consecutive failure counters"),
        ("POST", "/admin/tokens/reset-consecutive", reset_consecutive, "Reset the consecutive failure counters"),
        ("POST", "/admin/tokens/reset/{index}", reset_token, "Reset one token by index"),
        ("POST", "/admin/tokens/reset-all", reset_all_tokens, "Reset every token"),
        ("POST", "/admin/tokens/reload", reload_tokens, "Reload the tokens file now"),
        ("GET", "/admin/tokens/updater/status", updater_status, "Token updater status"),
        ("POST", "/admin/tokens/updater/force-update", force_update, "Refresh tokens from the accounts file now"),
    ]
    for method, path, handler, summary in routes:
        app.add_api_route(path, handler, methods=[method], tags=["admin"], summary=summary)


async def token_stats(request: Request) -> Response:
    t = target(request, TOKENS_PROVIDER)
    return success(pool_stats(t.pool, t.lifecycle))


async def consecutive_failures(request: Request) -> Response:
    t = target(request, TOKENS_PROVIDER)
    pool = t.pool
    return success({
        "consecutive_failures": pool.consecutive_failures if pool else 0,
        "threshold": CONSECUTIVE_FAILURE_THRESHOLD,
        "consecutive_upstream_errors": pool.consecutive_auth_failures if pool else 0,
        "upstream_error_threshold": UPSTREAM_ERROR_THRESHOLD,
        "last_upstream_error_time": pool.last_auth_failure_at if pool else None,
        "token_pool_size": len(pool) if pool else 0,
        "auto_refresh_enabled": t.refresher_off is None,
        "last_check": time.time(),
    })


async def reset_consecutive(request: Request) -> Response:
    t = target(request, TOKENS_PROVIDER)
    if t.pool is None:
        return t.problem or error("no pool", 409)
    previous = t.pool.reset_consecutive()
    return success({"previous_count": previous, "current_count": 0}, "Consecutive failure counters reset")


async def reset_token(request: Request) -> Response:
    t = target(request, TOKENS_PROVIDER)
    if t.pool is None:
        return t.problem or error("no pool", 409)
    raw = request.path_params["index"]
    entries = t.pool.entries
    # ASCII digits only: int() would also take " 1", "1_0" and "١".
    index = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else -1
    if not 0 <= index < len(entries):
        return error(f"Invalid token index: {raw} (the pool holds {len(entries)} token(s), indexes from 0)", 400)
    t.pool.reset(entries[index])
    return success(credential_view(entries[index], index, t.pool.now()), f"Token {index} reset")


async def reset_all_tokens(request: Request) -> Response:
    return reset_all(target(request, TOKENS_PROVIDER))


async def reload_tokens(request: Request) -> Response:
    return reload(target(request, TOKENS_PROVIDER))


async def updater_status(request: Request) -> Response:
    t = target(request, TOKENS_PROVIDER)
    reason = t.refresher_off
    if reason is not None or t.lifecycle is None or t.lifecycle.refresher is None:
        body = {"status": "disabled", "message": f"Automatic token update is off: {reason}",
                "data": {"is_running": False, "is_updating": False}}
        return Response(orjson.dumps(body), media_type="application/json")
    return success(t.lifecycle.refresher.status())


async def force_update(request: Request) -> Response:
    return await force_refresh(target(request, TOKENS_PROVIDER), request)
