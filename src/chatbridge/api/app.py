"""The ASGI application: routes, middleware, error handlers and the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from chatbridge import __version__
from chatbridge.api import admin, openai_routes
from chatbridge.api.errors import ApiError, to_api_error
from chatbridge.api.health import health
from chatbridge.api.middleware import ApiKeyMiddleware, RequestContextMiddleware
from chatbridge.api.openai_schema import ChatCompletionRequestIn
from chatbridge.config import Settings, load_settings
from chatbridge.runtime import Runtime, build_runtime


def create_app(runtime: Runtime) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.astart()
        app.state.router = runtime.router
        try:
            yield
        finally:
            await runtime.aclose()

    app = FastAPI(
        title="chatbridge",
        version=__version__,
        description="OpenAI-compatible gateway in front of K2Think and OpenAI-compatible upstreams.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.pipeline = runtime.pipeline
    app.state.router = runtime.router
    app.state.max_request_bytes = runtime.settings.max_request_bytes
    app.state.started_at = runtime.started_at

    app.add_api_route("/v1/chat/completions", openai_routes.chat_completions, methods=["POST"],
                      tags=["openai"], summary="Create a chat completion (streaming or not)")
    app.add_api_route("/chat/completions", openai_routes.chat_completions, methods=["POST"], include_in_schema=False)
    app.add_api_route("/v1/models", openai_routes.list_models, methods=["GET"], tags=["openai"], summary="List models")
    app.add_api_route("/v1/models/{model_id:path}", openai_routes.get_model, methods=["GET"], tags=["openai"],
                      summary="Retrieve a model")
    app.add_api_route("/health", health, methods=["GET"], tags=["ops"], summary="Gateway health")
    admin.install(app)

    _install_error_handlers(app)
    app.add_middleware(ApiKeyMiddleware, keys_for=_key_policy(runtime.client_keys, runtime.admin_keys))
    app.add_middleware(RequestContextMiddleware)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _key_policy(client_keys: Sequence[str], admin_keys: Sequence[str] = ()) -> Any:
    """Which keys open which paths: client keys the API, admin keys (only) `/admin`."""
    keys = list(client_keys)
    admin = [k for k in admin_keys if k not in keys]

    def keys_for(path: str) -> Sequence[str] | None:
        if path.startswith("/v1/") or path == "/chat/completions":
            return keys
        if path.startswith("/admin/") or path == "/admin":
            return admin
        return None

    return keys_for


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path.startswith("/admin/"):
            return admin.error(_admin_message(request, exc), exc.status_code)
        if exc.status_code == 404:
            error = ApiError(404, f"Unknown route: {request.method} {request.url.path}", "invalid_request_error", "not_found")
        elif exc.status_code == 405:
            error = ApiError(405, f"Method {request.method} is not allowed on {request.url.path}", "invalid_request_error", "method_not_allowed")
        else:
            error = ApiError(exc.status_code, str(exc.detail), "invalid_request_error")
        return Response(error.openai_body(), status_code=error.status, media_type="application/json")

    async def validation_error(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/admin/"):
            return admin.error("Invalid request parameters.", 400)
        error = ApiError(400, "Invalid request parameters.", "invalid_request_error", "invalid_value")
        return Response(error.openai_body(), status_code=400, media_type="application/json")

    async def unexpected(request: Request, exc: Exception) -> Response:
        error = to_api_error(exc)
        if request.url.path.startswith("/admin/"):
            return admin.error(error.message, error.status)
        return Response(error.openai_body(), status_code=error.status, media_type="application/json")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)


def _admin_message(request: Request, exc: StarletteHTTPException) -> str:
    if exc.status_code == 404:
        return f"Unknown admin route: {request.method} {request.url.path}"
    if exc.status_code == 405:
        return f"Method {request.method} is not allowed on {request.url.path}"
    return str(exc.detail)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """Document the chat request body, which the route reads raw for speed and exact errors."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    body_schema = ChatCompletionRequestIn.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(body_schema.pop("$defs", {}))
    components["ChatCompletionRequest"] = body_schema
    operation = schema["paths"]["/v1/chat/completions"]["post"]
    operation["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
    }
    schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    schema["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and worker processes."""
    return create_app(build_runtime(load_settings()))


def create_app_from_settings(settings: Settings) -> FastAPI:
    return create_app(build_runtime(settings))
