"""The ASGI application: the chat lane, the FastAPI routes, error handlers and the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from chatbridge import __version__
from chatbridge.api import admin, admin_keys, admin_page, admin_tokens, errors
from chatbridge.api.anthropic import AnthropicDialect
from chatbridge.api.anthropic.count import CountTokensEndpoint
from chatbridge.api.anthropic.models import error_response as anthropic_error_response
from chatbridge.api.anthropic.schema import MessagesRequestIn
from chatbridge.api.asgi import GatewayApp, RawEndpoint
from chatbridge.api.auth import METRICS_PATH, key_kind, key_policy
from chatbridge.api.cors import with_cors
from chatbridge.api.endpoint import ChatEndpoint
from chatbridge.api.errors import MESSAGES_PATH, ApiError, to_api_error
from chatbridge.api.health import health
from chatbridge.api.models import get_model, list_models
from chatbridge.api.openai import OpenAIDialect
from chatbridge.api.openai.schema import ChatCompletionRequestIn
from chatbridge.api.prometheus import MetricsEndpoint, worker_exiting
from chatbridge.config import load_settings
from chatbridge.runtime import Runtime, build_runtime

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
COUNT_TOKENS_PATH = MESSAGES_PATH + "/count_tokens"


def create_app(runtime: Runtime) -> ASGIApp:
    """The gateway: chat completions and messages on their own lanes, everything else through FastAPI; CORS in front."""
    runtime.start_tracing()  # before the lanes take the tracer (off, and nothing imported, unless configured)
    framework = create_framework_app(runtime)
    limit = runtime.settings.max_request_bytes
    chat = ChatEndpoint(OpenAIDialect(), runtime.pipeline, limit, runtime.keys, runtime.drain, runtime.tracer)
    messages = ChatEndpoint(AnthropicDialect(), runtime.pipeline, limit, runtime.keys, runtime.drain, runtime.tracer)
    keys_for = key_policy(runtime.keys, runtime.admin_keys, runtime.settings.metrics_public)
    lanes: dict[str, RawEndpoint] = {**dict.fromkeys(CHAT_PATHS, chat), MESSAGES_PATH: messages,
                                     COUNT_TOKENS_PATH: CountTokensEndpoint(runtime.pipeline, limit),
                                     METRICS_PATH: MetricsEndpoint(runtime)}
    return with_cors(GatewayApp(framework, keys_for, lanes), runtime.settings.cors_origin_list)


def is_anthropic(request: Request) -> bool:
    """Requests whose errors take Anthropic's envelope (`errors.is_anthropic`, which the key check asks too)."""
    return errors.is_anthropic(request.url.path, request.scope["headers"])


async def root(request: Request) -> Response:
    """`GET`/`HEAD /`: Claude Code and load balancers probe it."""
    return Response(b'{"name":"chatbridge","status":"ok"}', media_type="application/json")


def create_framework_app(runtime: Runtime) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        await runtime.astart()
        try:
            yield {"drain": runtime.drain}  # uvicorn hands it to the listener, which begins it at shutdown
        finally:
            worker_exiting()
            await runtime.aclose()

    app = FastAPI(
        title="chatbridge",
        version=__version__,
        description="OpenAI-compatible gateway in front of web-chat AI services and OpenAI-compatible upstreams.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime

    app.add_api_route("/v1/models", list_models, methods=["GET"], tags=["openai"], summary="List models")
    app.add_api_route("/v1/models/{model_id:path}", get_model, methods=["GET"], tags=["openai"],
                      summary="Retrieve a model")
    app.add_api_route("/health", health, methods=["GET"], tags=["ops"], summary="Gateway health")
    app.add_api_route("/", root, methods=["GET", "HEAD"], include_in_schema=False)
    admin.install(app)
    admin_tokens.install(app)
    admin_keys.install(app)
    admin_page.install(app)
    _head_wherever_get(app)

    _install_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _head_wherever_get(app: FastAPI) -> None:
    """HEAD is answered wherever GET is, as HTTP asks (RFC 9110 §9.3.2): uptime monitors and
    `curl -I` use it. The server sends the GET answer's headers only. Kept out of the spec,
    which would list every operation twice."""
    for route in list(app.router.routes):
        if isinstance(route, APIRoute) and route.methods and "GET" in route.methods and "HEAD" not in route.methods:
            app.add_api_route(route.path, route.endpoint, methods=["HEAD"], include_in_schema=False)


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path.startswith("/admin/"):
            refused = admin.error(_admin_message(request, exc), exc.status_code)
            refused.headers.update(_allow_header(exc))
            return refused
        if exc.status_code == 404:
            error = ApiError(404, f"Unknown route: {request.method} {request.url.path}", "invalid_request_error", "not_found")
        elif exc.status_code == 405:
            error = ApiError(405, f"Method {request.method} is not allowed on {request.url.path}", "invalid_request_error", "method_not_allowed")
        else:
            error = ApiError(exc.status_code, str(exc.detail), "invalid_request_error")
        response = _error_response(request, error)
        response.headers.update(_allow_header(exc))
        return response

    async def validation_error(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/admin/"):
            return admin.error("Invalid request parameters.", 400)
        return _error_response(request, ApiError(400, "Invalid request parameters.", "invalid_request_error", "invalid_value"))

    async def unexpected(request: Request, exc: Exception) -> Response:
        error = to_api_error(exc)
        if request.url.path.startswith("/admin/"):
            return admin.error(error.message, error.status)
        return _error_response(request, error)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)


def _error_response(request: Request, error: ApiError) -> Response:
    if is_anthropic(request):
        return anthropic_error_response(error, request)
    return Response(error.openai_body(), status_code=error.status, media_type="application/json")


def _allow_header(exc: StarletteHTTPException) -> dict[str, str]:
    """A 405 names the methods the route takes (Starlette puts them on the exception)."""
    allow = (exc.headers or {}).get("Allow") if exc.status_code == 405 else None
    return {"Allow": allow} if allow else {}


def _admin_message(request: Request, exc: StarletteHTTPException) -> str:
    if exc.status_code == 404:
        return f"Unknown admin route: {request.method} {request.url.path}"
    if exc.status_code == 405:
        return f"Method {request.method} is not allowed on {request.url.path}"
    return str(exc.detail)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """Document the chat route, which is served on its own lane (`GatewayApp`), not by FastAPI."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    body_schema = ChatCompletionRequestIn.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(body_schema.pop("$defs", {}))
    components["ChatCompletionRequest"] = body_schema
    chat_operation = {
        "tags": ["openai"],
        "summary": "Create a chat completion (streaming or not)",
        "operationId": "create_chat_completion",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
        },
        "responses": {
            "200": {
                "description": "A `chat.completion` object, or with `stream: true` an SSE stream of "
                               "`chat.completion.chunk` objects ending with `data: [DONE]`.",
                "content": {"application/json": {}, "text/event-stream": {}},
            },
            "default": {"description": "An error in the OpenAI envelope `{\"error\": {...}}`."},
        },
    }
    schema["paths"] = {"/v1/chat/completions": {"post": chat_operation}, **_messages_paths(components),
                       **schema.get("paths", {})}
    _document_keys(schema)
    app.openapi_schema = schema
    return schema


def _messages_paths(components: dict[str, Any]) -> dict[str, Any]:
    """The Anthropic routes, also served on their own lane."""
    body_schema = MessagesRequestIn.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body_schema.pop("$defs", {}))
    components["MessagesRequest"] = body_schema
    request_body = {"required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessagesRequest"}}}}
    errors = {"description": 'An error in Anthropic\'s envelope `{"type": "error", "error": {"type", "message"}}`.'}
    anthropic_headers = [
        {"name": "anthropic-version", "in": "header", "required": False, "schema": {"type": "string"}},
        {"name": "anthropic-beta", "in": "header", "required": False, "schema": {"type": "string"}},
        {"name": "x-api-key", "in": "header", "required": False, "schema": {"type": "string"}},
    ]
    return {
        MESSAGES_PATH: {"post": {
            "tags": ["anthropic"], "summary": "Create a message (Anthropic Messages API, streaming or not)",
            "operationId": "create_message", "parameters": anthropic_headers, "requestBody": request_body,
            "responses": {
                "200": {"description": "A `message` object, or with `stream: true` an SSE stream of "
                                       "`message_start`, `content_block_*`, `message_delta`, `message_stop` "
                                       "(and `ping`) events.",
                        "content": {"application/json": {}, "text/event-stream": {}}},
                "default": errors,
            },
        }},
        COUNT_TOKENS_PATH: {"post": {
            "tags": ["anthropic"], "summary": "Count a message request's input tokens",
            "operationId": "count_message_tokens", "parameters": anthropic_headers, "requestBody": request_body,
            "responses": {
                "200": {"description": '`{"input_tokens": N}`', "content": {"application/json": {}}},
                "default": errors,
            },
        }},
    }


_SECURITY_SCHEMES = {
    "clientKey": {"type": "http", "scheme": "bearer",
                  "description": "A client key: VALID_API_KEY, or the key generated in DATA_DIR/api_key."},
    "clientKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "A client key, as x-api-key."},
    "adminKey": {"type": "http", "scheme": "bearer",
                 "description": "The admin key: ADMIN_API_KEY, or the key generated in DATA_DIR/admin_key."},
    "adminKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "The admin key, as x-api-key."},
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {"client": [{"clientKey": []}, {"clientKeyHeader": []}], "admin": [{"adminKey": []}, {"adminKeyHeader": []}]}
_ERROR_SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": "string", "nullable": True}, "code": {"type": "string", "nullable": True}}}}},
    "AnthropicError": {"type": "object", "required": ["type", "error"], "properties": {
        "type": {"type": "string", "enum": ["error"]},
        "error": {"type": "object", "required": ["type", "message"],
                  "properties": {"type": {"type": "string"}, "message": {"type": "string"}}},
        "request_id": {"type": "string", "nullable": True}}},
    "AdminError": {"type": "object", "required": ["status", "message"],
                   "properties": {"status": {"type": "string", "enum": ["error"]}, "message": {"type": "string"}}},
}


def _document_keys(schema: dict[str, Any]) -> None:
    """Each operation's key, from the same rule the gateway enforces (`auth.key_kind`), and its refusals."""
    components = schema.setdefault("components", {})
    components["securitySchemes"] = _SECURITY_SCHEMES
    components.setdefault("schemas", {}).update(_ERROR_SCHEMAS)
    for path, operations in schema.get("paths", {}).items():
        kind = key_kind(path)
        for operation in operations.values():
            operation["security"] = _SECURITY[kind] if kind else []
            if kind is None:
                continue
            envelope = "AdminError" if kind == "admin" else "AnthropicError" if path.startswith(MESSAGES_PATH) else "Error"
            ref = {"$ref": "#/components/schemas/" + envelope}
            responses = operation.setdefault("responses", {})
            responses["401"] = {"description": "Missing or invalid " + ("admin key (a client key does not open /admin/)" if kind == "admin" else "API key"),
                                "content": {"application/json": {"schema": ref}}}


def create_serving_app(runtime: Runtime) -> ASGIApp:
    """The app for a serving process, whose collector is tuned once the app is built."""
    from chatbridge.api.gc_policy import tune_for_serving

    gateway = create_app(runtime)
    tune_for_serving()
    return gateway


def create_app_from_env() -> ASGIApp:
    """Factory for `uvicorn --factory`: each worker process builds its own."""
    return create_serving_app(build_runtime(load_settings()))
