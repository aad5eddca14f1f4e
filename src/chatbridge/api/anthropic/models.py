"""`GET /v1/models` and `GET /v1/models/{id}` in Anthropic's shapes (`type: "model"`, paged by ids)."""

from __future__ import annotations

import datetime

import orjson
from starlette.requests import Request
from starlette.responses import Response

from chatbridge.api.auth import allowed_models, model_allowed
from chatbridge.api.errors import ApiError, to_api_error
from chatbridge.core.errors import InvalidRequest, ModelNotFound
from chatbridge.core.types import ModelInfo

JSON = "application/json"
DEFAULT_LIMIT, MAX_LIMIT = 20, 1000


def _model_json(model_id: str, created_at: str) -> dict[str, str]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": created_at}


def _created_at(request: Request) -> str:
    started = request.app.state.runtime.started_at
    return datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_response(error: ApiError, request: Request) -> Response:
    error = error.for_anthropic()
    request_id = request.scope.get("state", {}).get("request_id")
    return Response(error.anthropic_body(request_id), status_code=error.status, media_type=JSON, headers=error.headers())


def page(models: list[ModelInfo], limit: int, after_id: str | None, before_id: str | None) -> tuple[list[ModelInfo], bool]:
    """The page after `after_id` (or before `before_id`), and whether more lie beyond it."""
    ids = [m.id for m in models]
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
        chosen = models[start : start + limit]
        return chosen, start + limit < len(models)
    if before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        start = max(0, end - limit)
        return models[start:end], start > 0
    return models[:limit], limit < len(models)


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: must be an integer from 1 to {MAX_LIMIT}", param="limit")
    return int(raw)


async def list_models(request: Request) -> Response:
    try:
        limit = _limit(request.query_params.get("limit"))
    except InvalidRequest as exc:
        return error_response(to_api_error(exc), request)
    models = allowed_models(request.scope, request.app.state.runtime.router.models())
    chosen, more = page(models, limit, request.query_params.get("after_id"), request.query_params.get("before_id"))
    created = _created_at(request)
    body = {"data": [_model_json(m.id, created) for m in chosen], "has_more": more,
            "first_id": chosen[0].id if chosen else None, "last_id": chosen[-1].id if chosen else None}
    return Response(orjson.dumps(body), media_type=JSON)


async def get_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    try:
        request.app.state.runtime.router.resolve(model_id)
        if not model_allowed(request.scope, model_id):
            raise ModelNotFound(model_id, "this API key may not use it")
    except ModelNotFound as exc:
        return error_response(to_api_error(exc), request)
    return Response(orjson.dumps(_model_json(model_id, _created_at(request))), media_type=JSON)
