"""`/v1/chat/completions` and `/v1/models`: the OpenAI surface."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from chatbridge.api.errors import stream_error_event, to_api_error
from chatbridge.api.openai_encode import ChunkEncoder, CompletionAggregator, completion_id, now
from chatbridge.api.openai_schema import parse_chat_request
from chatbridge.api.streaming import EventStreamResponse
from chatbridge.core.errors import ModelNotFound, RequestTooLarge
from chatbridge.core.pipeline import Pipeline, PrimedStream, Timing
from chatbridge.core.routing import Router

JSON = "application/json"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing anything over `limit` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def overhead_ms(request: Request, timing: Timing) -> str:
    started = request.scope.get("state", {}).get("started", time.perf_counter())
    spent = time.perf_counter() - started - timing.upstream_wait
    return f"{max(0.0, spent) * 1000:.3f}"


def error_response(exc: BaseException) -> Response:
    error = to_api_error(exc)
    return Response(error.openai_body(), status_code=error.status, media_type=JSON, headers=error.headers())


async def chat_completions(request: Request) -> Response:
    app_state = request.app.state
    pipeline: Pipeline = app_state.pipeline
    try:
        body = await read_body(request, app_state.max_request_bytes)
        chat = parse_chat_request(body)
        timing = Timing()
        primed = await pipeline.open(chat, timing)
    except Exception as exc:
        return error_response(exc)
    chat_id, created = completion_id(), now()
    if chat.stream:
        encoder = ChunkEncoder(chat_id, created, chat.model, chat.include_usage)
        headers = {"x-chatbridge-overhead-ms": overhead_ms(request, timing)}
        return EventStreamResponse(_sse_body(primed, encoder), headers)
    aggregator = CompletionAggregator()
    try:
        async for event in primed:
            aggregator.add(event)
    except Exception as exc:
        return error_response(exc)
    finally:
        await primed.aclose()
    return Response(
        aggregator.body(chat_id, created, chat.model), media_type=JSON,
        headers={"x-chatbridge-overhead-ms": overhead_ms(request, timing)},
    )


async def _sse_body(primed: PrimedStream, encoder: ChunkEncoder) -> AsyncIterator[bytes]:
    try:
        async for event in primed:
            chunk = encoder.encode(event)
            if chunk:
                yield chunk
    except Exception as exc:  # the stream has started: the error goes in-band, no [DONE]
        yield stream_error_event(exc)
        return
    finally:
        await primed.aclose()
    yield encoder.close()


def _model_json(model_id: str, owned_by: str, created: int) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


async def list_models(request: Request) -> Response:
    import orjson

    router: Router = request.app.state.router
    created = request.app.state.started_at
    data = [_model_json(m.id, m.owned_by, created) for m in router.models()]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)


async def get_model(request: Request) -> Response:
    import orjson

    router: Router = request.app.state.router
    model_id = request.path_params["model_id"]
    try:
        route = router.resolve(model_id)
    except ModelNotFound as exc:
        return error_response(exc)
    body = _model_json(route.public_id, route.owned_by or route.provider.name, request.app.state.started_at)
    return Response(orjson.dumps(body), media_type=JSON)
