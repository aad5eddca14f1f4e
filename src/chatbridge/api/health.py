"""`/health`: what is enabled, in which mode, and how healthy each credential pool is."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from chatbridge import __version__


async def health(request: Request) -> Response:
    """Always answers at once (nothing here waits on an upstream); "degraded" when a provider
    cannot serve now: it has no models (yet), or its upstream is resting after an outage."""
    runtime = request.app.state.runtime
    providers: dict[str, object] = {}
    degraded = False
    for name, wiring in runtime.wirings.items():
        pool = wiring.pool
        refresher = wiring.lifecycle.refresher if wiring.lifecycle is not None else None
        models = [m.id for m in wiring.provider.models()]
        outage = pool.outage.view(pool.now()) if pool is not None else None
        degraded = degraded or not models or (outage is not None and outage["state"] == "open")
        providers[name] = {
            "enabled": True,
            "mode": wiring.mode,
            "models": models,
            "discovery": wiring.provider.discovery(),
            "credentials": pool.counts() if pool is not None else None,
            "upstream_outage": outage,
            "auto_update": refresher is not None,
            "refreshing": refresher is not None and refresher.is_updating,
        }
    body = {"status": "degraded" if degraded else "ok", "version": __version__, "providers": providers}
    return Response(orjson.dumps(body), media_type="application/json")
