"""The admin API under `/admin/`: every provider's credential pool, and the original tool's token routes.

`/admin/providers/{name}/credentials...` manages any provider with a pool; `/admin/tokens/*`
(`api/admin_tokens.py`) are the original tool's paths, kept as aliases for the provider the
registry names. Every route needs an admin key (checked by `GatewayApp`, see
`auth.key_policy`); a client key never opens them. Bodies keep the original tool's shape:
`{"status": "success", "data": ...}` or `{"status": "error", "message": ...}` with a real error
status. Tokens are shown masked (first 6 and last 4 characters), e-mails as `al***@example.com`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from chatbridge.core.secrets import redact
from chatbridge.pool.accounts import mask_email
from chatbridge.pool.lifecycle import CONSECUTIVE_FAILURE_THRESHOLD, PoolLifecycle
from chatbridge.pool.pool import CredentialHealth, CredentialPool, CredentialState

UPSTREAM_ERROR_THRESHOLD = 1  # one auth failure is enough to trigger a refresh
_PREFIX = "/admin/providers/{provider}/credentials"


def install(app: FastAPI) -> None:
    routes = [
        ("GET", "/admin/pools", pools, "Every provider's credentials and their health"),
        ("POST", "/admin/pools/{provider}/{credential}/{action}", pool_action, "enable, disable or reset one credential"),
        ("GET", _PREFIX, provider_credentials, "One provider's credentials and pool statistics"),
        ("POST", _PREFIX + "/reset-all", provider_reset_all, "Reset every credential of a provider"),
        ("POST", _PREFIX + "/reload", provider_reload, "Reload a provider's credential files now"),
        ("POST", _PREFIX + "/force-refresh", provider_force_refresh, "Refresh a provider's credentials now"),
        ("POST", _PREFIX + "/{credential}/reset", provider_reset_one, "Reset one credential (by id or index)"),
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


@dataclass(frozen=True, slots=True)
class Target:
    """The provider an admin request addresses, and its pool (if it has one)."""

    name: str
    pool: CredentialPool | None
    lifecycle: PoolLifecycle | None
    problem: Response | None  # why there is nothing to manage, already as a response
    no_refresh_reason: str = ""

    @property
    def refresher_off(self) -> str | None:
        """Why credentials are not refreshed, or None when they are."""
        if self.lifecycle is not None and self.lifecycle.refresher is not None:
            return None
        return self.no_refresh_reason


def target(request: Request, provider: str) -> Target:
    runtime = request.app.state.runtime
    wiring = runtime.wirings.get(provider)
    pool, lifecycle = runtime.pools.get(provider), runtime.lifecycles.get(provider)
    problem = None
    if provider not in runtime.known_providers:
        problem = error(f"Unknown provider {provider!r}", 404)
    elif wiring is None:
        problem = error(f"{provider} has no credential pool: it is {runtime.disabled.get(provider, 'disabled')}", 409)
    elif pool is None:
        problem = error(f"{provider} has no credential pool: it {wiring.no_pool_reason}", 409)
    no_refresh = wiring.no_refresh_reason if wiring is not None else "it is disabled"
    return Target(provider, pool, lifecycle, problem, no_refresh)


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
        "upstream_outage": pool.outage.view(now) if pool is not None else None,
        "tokens": [credential_view(e, i, now) for i, e in enumerate(entries)],
    }


def find_credential(pool: CredentialPool, key: str) -> tuple[int, CredentialHealth] | None:
    """A credential by its id, or by its index (ASCII digits only: int() would also take " 1", "1_0" and "١")."""
    entries = pool.entries
    for index, entry in enumerate(entries):
        if entry.credential.id == key:
            return index, entry
    if key.isascii() and key.isdigit() and len(key) <= 9 and int(key) < len(entries):
        return int(key), entries[int(key)]
    return None


# -- operations (shared by /admin/providers/... and the /admin/tokens/* aliases) ----------------------


def reset_all(t: Target) -> Response:
    if t.pool is None:
        return t.problem or error("no pool", 409)
    t.pool.reset_all()
    return success(pool_stats(t.pool, t.lifecycle), f"All {len(t.pool)} token(s) reset")


def reload(t: Target) -> Response:
    if t.pool is None or t.lifecycle is None:
        return t.problem or error(f"{t.name} has no credential files to reload", 409)
    if not t.lifecycle.has_files:
        return error("No TOKENS_FILE is configured; nothing to reload", 400)
    t.lifecycle.reload()
    if t.lifecycle.last_reload_error:
        return error(f"Reload failed: {t.lifecycle.last_reload_error}", 500)
    return success(pool_stats(t.pool, t.lifecycle), f"Tokens file reloaded: {len(t.pool)} token(s)")


async def force_refresh(t: Target, request: Request) -> Response:
    reason = t.refresher_off
    if reason is not None or t.lifecycle is None or t.lifecycle.refresher is None:
        return error(f"Automatic token update is disabled: {reason}", 400)
    refresher = t.lifecycle.refresher
    joined = refresher.is_updating
    task = refresher.trigger("forced by an administrator", force=True)
    assert task is not None
    if request.query_params.get("wait", "true").lower() in ("0", "false", "no"):
        return success({"is_updating": True, "joined_running_update": joined}, "Token update started", status=202)
    result = await asyncio.shield(task)
    data = {"result": result.to_dict(), "joined_running_update": joined, "stats": pool_stats(t.pool, t.lifecycle)}
    if not result.ok:
        return error(f"Token update failed: {result.message}; the previous tokens stay in use", 500)
    return success(data, f"Token update done: {result.message}")


# -- /admin/providers/{provider}/credentials ------------------------------------------------------


async def provider_credentials(request: Request) -> Response:
    t = target(request, request.path_params["provider"])
    if t.problem is not None:
        return t.problem
    return success(pool_stats(t.pool, t.lifecycle))


async def provider_reset_all(request: Request) -> Response:
    return reset_all(target(request, request.path_params["provider"]))


async def provider_reload(request: Request) -> Response:
    return reload(target(request, request.path_params["provider"]))


async def provider_force_refresh(request: Request) -> Response:
    t = target(request, request.path_params["provider"])
    if t.problem is not None and t.problem.status_code == 404:
        return t.problem
    return await force_refresh(t, request)


async def provider_reset_one(request: Request) -> Response:
    t = target(request, request.path_params["provider"])
    if t.pool is None:
        return t.problem or error("no pool", 409)
    key = request.path_params["credential"]
    found = find_credential(t.pool, key)
    if found is None:
        return error(f"No credential {key!r} in the {t.name} pool (ids and indexes are listed by GET {_PREFIX.format(provider=t.name)})", 404)
    index, entry = found
    t.pool.reset(entry)
    return success(credential_view(entry, index, t.pool.now()), f"Credential {entry.credential.id} reset")


# -- /admin/pools -------------------------------------------------------------------------------


async def pools(request: Request) -> Response:
    runtime = request.app.state.runtime
    providers: dict[str, Any] = {}
    for name, wiring in runtime.wirings.items():
        pool, lifecycle = runtime.pools.get(name), runtime.lifecycles.get(name)
        view: dict[str, Any] = {"mode": wiring.mode, "pooled": pool is not None}
        if pool is not None:
            now = pool.now()
            view.update({
                "counts": pool.counts(),
                "max_failures": pool.max_failures,
                "consecutive_failures": pool.consecutive_failures,
                "upstream_outage": pool.outage.view(now),
                "tokens_file": lifecycle.describe_files() if lifecycle else None,
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
    pool = request.app.state.runtime.pools.get(provider)
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
