"""`/health`: what is enabled, in which mode, and how healthy each credential pool is."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from chatbridge import __version__


async def health(request: Request) -> Response:
    """Always answers at once (nothing here waits on an upstream or on Redis); "degraded" when a
    provider cannot serve now (no models yet, its upstream resting after an outage, no credential
    of its pool usable: all disabled, cooling or expired) or when the shared state store (Redis)
    is unreachable and this replica serves from its local state."""
    runtime = request.app.state.runtime
    providers: dict[str, object] = {}
    degraded = False
    for name, wiring in runtime.wirings.items():
        pool = wiring.pool
        refresher = wiring.lifecycle.refresher if wiring.lifecycle is not None else None
        models = [m.id for m in wiring.provider.models()]
        outage = pool.outage.view(pool.now()) if pool is not None else None
        counts = pool.counts() if pool is not None else None
        degraded = (degraded or not models or (outage is not None and outage["state"] == "open")
                    or (counts is not None and counts["active"] == 0))
        providers[name] = {
            "enabled": True,
            "mode": wiring.mode,
            "models": models,
            "discovery": wiring.provider.discovery(),
            "credentials": counts,
            "upstream_outage": outage,
            "auto_update": refresher is not None,
            "refreshing": refresher is not None and refresher.is_updating,
        }
    state: dict[str, object] | None = None
    if runtime.store is not None:
        status = runtime.store.status()
        state = {"backend": status.backend, "up": status.up, "errors": status.errors}
        degraded = degraded or (runtime.store.shared and not status.up)
    body = {"status": "degraded" if degraded else "ok", "version": __version__, "providers": providers, "state": state}
    return Response(orjson.dumps(body), media_type="application/json")
