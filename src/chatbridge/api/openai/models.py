"""`GET /v1/models` and `GET /v1/models/{id}` in OpenAI's shapes."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from chatbridge.api.auth import allowed_models, model_allowed
from chatbridge.api.errors import to_api_error
from chatbridge.core.errors import ModelNotFound
from chatbridge.gateway.router import Router

JSON = "application/json"


def _model_json(model_id: str, owned_by: str, created: int) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


async def list_models(request: Request) -> Response:
    router: Router = request.app.state.runtime.router
    created = request.app.state.runtime.started_at
    data = [_model_json(m.id, m.owned_by, created) for m in allowed_models(request.scope, router.models())]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)


async def get_model(request: Request) -> Response:
    runtime = request.app.state.runtime
    model_id = request.path_params["model_id"]
    try:
        route = runtime.router.resolve(model_id)
        if not model_allowed(request.scope, model_id):
            raise ModelNotFound(model_id, "this API key may not use it")
    except ModelNotFound as exc:
        error = to_api_error(exc)
        return Response(error.openai_body(), status_code=error.status, media_type=JSON, headers=error.headers())
    body = _model_json(route.public_id, route.owned_by or route.provider, runtime.started_at)
    return Response(orjson.dumps(body), media_type=JSON)
