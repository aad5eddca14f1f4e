"""`/health`: what is enabled, in which mode, and how healthy each credential pool is."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from chatbridge import __version__


async def health(request: Request) -> Response:
    runtime = request.app.state.runtime
    providers: dict[str, object] = {}
    for name, wiring in runtime.wirings.items():
        pool = wiring.pool
        refresher = wiring.lifecycle.refresher if wiring.lifecycle is not None else None
        providers[name] = {
            "enabled": True,
            "mode": wiring.mode,
            "models": [m.id for m in wiring.provider.models()],
            "credentials": pool.counts() if pool is not None else None,
            "auto_update": refresher is not None,
            "refreshing": refresher is not None and refresher.is_updating,
        }
    body = {"status": "ok", "version": __version__, "providers": providers}
    return Response(orjson.dumps(body), media_type="application/json")
