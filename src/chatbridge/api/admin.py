"""The admin API under `/admin/`: the original tool's token routes and a provider-neutral pool view.

Every route needs an admin key (checked by `GatewayApp`, see `auth.key_policy`); a
client key never opens them. Bodies keep the original tool's shape: `{"status": "success",
"data": ...}` or `{"status": "error", "message": ...}` with a real error status. Tokens are
shown masked (first 6 and last 4 characters), e-mails as `al***@example.com`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from chatbridge.core.secrets import redact
from chatbridge.pool.accounts import mask_email
from chatbridge.pool.lifecycle import CONSECUTIVE_FAILURE_THRESHOLD, PoolLifecycle
from chatbridge.pool.pool import CredentialHealth, CredentialPool, CredentialState

TOKENS_PROVIDER = "k2think"  # the original tool's /admin/tokens/* routes address this pool
UPSTREAM_ERROR_THRESHOLD = 1  # one auth failure is enough to trigger a refresh


def install(app: FastAPI) -> None:
    routes = [
        ("GET", "/admin/tokens/stats", token_stats, "Token pool statistics"),
        ("GET", "/admin/tokens/consecutive-failures", consecutive_failures, "Consecutive failure counters"),
        ("POST", "/admin/tokens/reset-consecutive", reset_consecutive, "Reset the consecutive failure counters"),
        ("POST", "/admin/tokens/reset/{index}", reset_token, "Reset one token by index"),
        ("POST", "/admin/tokens/reset-all", reset_all, "Reset every token"),
        ("POST", "/admin/tokens/reload", reload_tokens, "Reload the tokens file now"),
        ("GET", "/admin/tokens/updater/status", updater_status, "Token updater status"),
        ("POST", "/admin/tokens/updater/force-update", force_update, "Refresh tokens from the accounts file now"),
        ("GET", "/admin/pools", pools, "Every provider's credentials and their health"),
        ("POST", "/admin/pools/{provider}/{credential}/{action}", pool_action, "enable, disable or reset one credential"),
    ]
    for method, path, handler, summary in routes:
        app.add_api_route(path, handler, methods=[method], tags=["admin"], summary=summary)


# -- helpers --------------------------------------------------------------------------------------


def success(data: Any = None, message: str | None = None, status: int = 200) -> Response:
    body: dict[str, Any] = {"status": "success"}
    if message is not None:
        body["message"] = message
    if data is not None:
        body["data"] = data
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error(message: str, status: int) -> Response:
    return Response(orjson.dumps({"status": "error", "message": message}), status_code=status, media_type="application/json")


def _pool(request: Request, provider: str = TOKENS_PROVIDER) -> tuple[CredentialPool | None, PoolLifecycle | None]:
    runtime = request.app.state.runtime
    return runtime.pools.get(provider), runtime.lifecycles.get(provider)


def credential_view(entry: CredentialHealth, index: int, now: float) -> dict[str, Any]:
    credential = entry.credential
    state = entry.state(now)
    return {
        "index": index,
        "id": credential.id,
        "token": credential.secret.masked,
        "source": credential.source,
        "account": mask_email(credential.account) if credential.account else None,
        "state": state.value,
        "is_active": state is CredentialState.ACTIVE,
        "failures": entry.failures,
        "cooldown_until": entry.cooldown_until if entry.cooldown_until > now else None,
        "expires_at": credential.expires_at,
        "last_error": redact(entry.last_error) if entry.last_error else None,
        "disabled_reason": redact(entry.disabled_reason) if entry.disabled_reason else None,
        "requests_served": entry.requests_served,
        "in_flight": entry.in_flight,
        "last_used": entry.last_used or None,
    }


def pool_stats(pool: CredentialPool | None, lifecycle: PoolLifecycle | None) -> dict[str, Any]:
    now = time.time() if pool is None else pool.now()
    entries = pool.entries if pool is not None else []
    counts = pool.counts() if pool is not None else {"total": 0, "active": 0, "cooling": 0, "disabled": 0, "expired": 0}
    distribution = Counter(str(e.failures) for e in entries)
    return {
        "total_tokens": counts["total"],
        "active_tokens": counts["active"],
        "inactive_tokens": counts["total"] - counts["active"],
        "cooling_tokens": counts["cooling"],
        "disabled_tokens": counts["disabled"],
        "expired_tokens": counts["expired"],
        "current_index": pool.current_index if pool is not None else 0,
        "failure_distribution": dict(sorted(distribution.items())),
        "max_failures": pool.max_failures if pool is not None else None,
        "consecutive_failures": pool.consecutive_failures if pool is not None else 0,
        "consecutive_failure_threshold": CONSECUTIVE_FAILURE_THRESHOLD,
        "consecutive_upstream_errors": pool.consecutive_auth_failures if pool is not None else 0,
        "upstream_error_threshold": UPSTREAM_ERROR_THRESHOLD,
        "auto_update_enabled": lifecycle is not None and lifecycle.refresher is not None,
        "tokens": [credential_view(e, i, now) for i, e in enumerate(entries)],
    }


def _no_pool(request: Request) -> Response:
    runtime = request.app.state.runtime
    provider = runtime.providers.get(TOKENS_PROVIDER)
    why = ("is disabled (K2THINK_ENABLED=false)" if provider is None else
           "runs in guest mode (no K2THINK_TOKEN, no TOKENS_FILE, and no ACCOUNTS_FILE with ENABLE_TOKEN_AUTO_UPDATE=true)")
    return error(f"{TOKENS_PROVIDER} has no token pool: it {why}", 409)


# -- /admin/tokens/* ------------------------------------------------------------------------------


async def token_stats(request: Request) -> Response:
    pool, lifecycle = _pool(request)
    return success(pool_stats(pool, lifecycle))


async def consecutive_failures(request: Request) -> Response:
    pool, lifecycle = _pool(request)
    return success({
        "consecutive_failures": pool.consecutive_failures if pool else 0,
        "threshold": CONSECUTIVE_FAILURE_THRESHOLD,
        "consecutive_upstream_errors": pool.consecutive_auth_failures if pool else 0,
        "upstream_error_threshold": UPSTREAM_ERROR_THRESHOLD,
        "last_upstream_error_time": pool.last_auth_failure_at if pool else None,
        "token_pool_size": len(pool) if pool else 0,
        "auto_refresh_enabled": lifecycle is not None and lifecycle.refresher is not None,
        "last_check": time.time(),
    })


async def reset_consecutive(request: Request) -> Response:
    pool, _ = _pool(request)
    if pool is None:
        return _no_pool(request)
    previous = pool.reset_consecutive()
    return success({"previous_count": previous, "current_count": 0}, "Consecutive failure counters reset")


async def reset_token(request: Request) -> Response:
    pool, _ = _pool(request)
    if pool is None:
        return _no_pool(request)
    raw = request.path_params["index"]
    entries = pool.entries
    # ASCII digits only: int() would also take " 1", "1_0" and "١".
    index = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else -1
    if not 0 <= index < len(entries):
        return error(f"Invalid token index: {raw} (the pool holds {len(entries)} token(s), indexes from 0)", 400)
    pool.reset(entries[index])
    return success(credential_view(entries[index], index, pool.now()), f"Token {index} reset")


async def reset_all(request: Request) -> Response:
    pool, lifecycle = _pool(request)
    if pool is None:
        return _no_pool(request)
    pool.reset_all()
    return success(pool_stats(pool, lifecycle), f"All {len(pool)} token(s) reset")


async def reload_tokens(request: Request) -> Response:
    pool, lifecycle = _pool(request)
    if pool is None or lifecycle is None:
        return _no_pool(request)
    if lifecycle.tokens_file is None:
        return error("No TOKENS_FILE is configured; nothing to reload", 400)
    lifecycle.reload()
    if lifecycle.last_reload_error:
        return error(f"Reload failed: {lifecycle.last_reload_error}", 500)
    return success(pool_stats(pool, lifecycle), f"Tokens file reloaded: {len(pool)} token(s)")


async def updater_status(request: Request) -> Response:
    _, lifecycle = _pool(request)
    if lifecycle is None or lifecycle.refresher is None:
        body = {"status": "disabled", "message": "Automatic token update is off: set ENABLE_TOKEN_AUTO_UPDATE=true and ACCOUNTS_FILE",
                "data": {"is_running": False, "is_updating": False}}
        return Response(orjson.dumps(body), media_type="application/json")
    return success(lifecycle.refresher.status())


async def force_update(request: Request) -> Response:
    pool, lifecycle = _pool(request)
    if lifecycle is None or lifecycle.refresher is None:
        return error("Automatic token update is disabled: set ENABLE_TOKEN_AUTO_UPDATE=true and ACCOUNTS_FILE", 400)
    refresher = lifecycle.refresher
    joined = refresher.is_updating
    task = refresher.trigger("forced by an administrator", force=True)
    assert task is not None
    if request.query_params.get("wait", "true").lower() in ("0", "false", "no"):
        return success({"is_updating": True, "joined_running_update": joined}, "Token update started", status=202)
    result = await asyncio.shield(task)
    data = {"result": result.to_dict(), "joined_running_update": joined, "stats": pool_stats(pool, lifecycle)}
    if not result.ok:
        return error(f"Token update failed: {result.message}; the previous tokens stay in use", 500)
    return success(data, f"Token update done: {result.message}")


# -- /admin/pools -------------------------------------------------------------------------------


async def pools(request: Request) -> Response:
    runtime = request.app.state.runtime
    providers: dict[str, Any] = {}
    for name, provider in runtime.providers.items():
        pool, lifecycle = _pool(request, name)
        view: dict[str, Any] = {"mode": getattr(provider, "mode", "api_key"), "pooled": pool is not None}
        if pool is not None:
            now = pool.now()
            view.update({
                "counts": pool.counts(),
                "max_failures": pool.max_failures,
                "consecutive_failures": pool.consecutive_failures,
                "tokens_file": str(lifecycle.tokens_file) if lifecycle and lifecycle.tokens_file else None,
                "refresh": lifecycle.refresher.status() if lifecycle and lifecycle.refresher else None,
                "credentials": [credential_view(e, i, now) for i, e in enumerate(pool.entries)],
            })
        providers[name] = view
    return success({"providers": providers})


_ACTIONS = ("enable", "disable", "reset")


async def pool_action(request: Request) -> Response:
    provider = request.path_params["provider"]
    credential_id = request.path_params["credential"]
    action = request.path_params["action"]
    if action not in _ACTIONS:
        return error(f"Unknown action {action!r}: use one of {', '.join(_ACTIONS)}", 404)
    pool, _ = _pool(request, provider)
    if pool is None:
        return error(f"No credential pool for provider {provider!r}", 404)
    entry = pool.find(credential_id)
    if entry is None:
        return error(f"No credential {credential_id!r} in the {provider} pool", 404)
    if action == "enable":
        pool.enable(entry)
    elif action == "disable":
        pool.disable(entry)
    else:
        pool.reset(entry)
    index = pool.entries.index(entry)
    done = {"enable": "enabled", "disable": "disabled", "reset": "reset"}[action]
    return success(credential_view(entry, index, pool.now()), f"Credential {credential_id} {done}")
