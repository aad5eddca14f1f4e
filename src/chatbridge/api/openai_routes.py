"""`/v1/chat/completions` and `/v1/models`: the OpenAI surface."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chatbridge.api.asgi import RawHeaders, overhead_header
from chatbridge.api.auth import header
from chatbridge.api.errors import ApiError, stream_error_event, to_api_error
from chatbridge.api.openai_encode import ChunkEncoder, CompletionAggregator, completion_id, now
from chatbridge.api.openai_schema import parse_chat_request
from chatbridge.api.streaming import ClientDisconnected, DisconnectWatch, EventStreamResponse
from chatbridge.core.errors import ModelNotFound, RequestTooLarge
from chatbridge.core.pipeline import Pipeline, PrimedStream, Timing
from chatbridge.core.routing import Router
from chatbridge.core.types import ChatRequest

JSON = "application/json"
_JSON_HEADER = (b"content-type", b"application/json")
_CHAT_METHODS = b"POST"


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refusing anything over `limit` bytes before reading it all."""
    declared = header(scope["headers"], b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(send: Send, status: int, body: bytes, headers: RawHeaders) -> None:
    start_headers = [_JSON_HEADER, (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: BaseException, headers: RawHeaders) -> None:
    """The error in the OpenAI envelope; `headers` must include the overhead header."""
    error = to_api_error(exc)
    extra = [(k.lower().encode(), v.encode()) for k, v in error.headers().items()]
    await send_json(send, error.status, error.openai_body(), [*headers, *extra])


class ChatCompletions:
    """`POST /v1/chat/completions` as a raw ASGI endpoint: the hot path, kept lean."""

    def __init__(self, pipeline: Pipeline, max_request_bytes: int) -> None:
        self.pipeline = pipeline
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send, headers: RawHeaders) -> None:
        if scope["method"] != "POST":
            error = ApiError(405, f"Method {scope['method']} is not allowed on {scope['path']}",
                             "invalid_request_error", "method_not_allowed")
            await send_json(send, 405, error.openai_body(), [*headers, (b"allow", _CHAT_METHODS), overhead_header(scope)])
            return
        try:
            body = await read_body(scope, receive, self.max_request_bytes)
            chat = parse_chat_request(body)
        except ClientDisconnected:
            return
        except Exception as exc:
            await send_error(send, exc, [*headers, overhead_header(scope)])
            return
        try:
            async with DisconnectWatch(receive):  # retries, a slow first byte, a long answer
                await self._answer(chat, scope, send, headers)
        except ClientDisconnected:
            return

    async def _answer(self, chat: ChatRequest, scope: Scope, send: Send, headers: RawHeaders) -> None:
        timing = Timing()
        try:
            primed = await self.pipeline.open(chat, timing)
        except Exception as exc:
            await send_error(send, exc, [*headers, overhead_header(scope, timing.upstream_wait)])
            return
        chat_id, created = completion_id(), now()
        if chat.stream:
            encoder = ChunkEncoder(chat_id, created, chat.model, chat.include_usage)
            stream_headers = [*headers, overhead_header(scope, timing.upstream_wait)]
            await EventStreamResponse(_sse_body(primed, encoder), stream_headers)(send)
            return
        aggregator = CompletionAggregator()
        try:
            async for event in primed:
                aggregator.add(event)
        except Exception as exc:
            await send_error(send, exc, [*headers, overhead_header(scope, timing.upstream_wait)])
            return
        finally:
            await primed.aclose()
        body = aggregator.body(chat_id, created, chat.model)
        await send_json(send, 200, body, [*headers, overhead_header(scope, timing.upstream_wait)])


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


def error_response(exc: BaseException) -> Response:
    error = to_api_error(exc)
    return Response(error.openai_body(), status_code=error.status, media_type=JSON, headers=error.headers())


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
