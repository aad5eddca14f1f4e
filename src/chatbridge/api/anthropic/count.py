"""`POST /v1/messages/count_tokens`: the prompt's tokens, counted as `message_start` counts them."""

from __future__ import annotations

import orjson
from starlette.types import Receive, Scope, Send

from chatbridge.api.anthropic.convert import to_chat_request
from chatbridge.api.anthropic.schema import CountTokensRequestIn, validate
from chatbridge.api.asgi import RawHeaders, overhead_header
from chatbridge.api.endpoint import read_body, send_json
from chatbridge.api.errors import ApiError, to_api_error
from chatbridge.core.errors import ClientDisconnected
from chatbridge.core.tokens import count_prompt_tokens
from chatbridge.gateway.pipeline import Pipeline


class CountTokensEndpoint:
    """A raw ASGI endpoint like the chat lane: the same body limit, parse and error envelope."""

    def __init__(self, pipeline: Pipeline, max_request_bytes: int) -> None:
        self.pipeline = pipeline  # its router is the current one (rebuilt once providers have started)
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send, headers: RawHeaders) -> None:
        if scope["method"] != "POST":
            error = ApiError(405, f"Method {scope['method']} is not allowed on {scope['path']}", "invalid_request_error")
            await self._error(send, scope, error, [*headers, (b"allow", b"POST")])
            return
        try:
            body = await read_body(scope, receive, self.max_request_bytes)
            request = to_chat_request(validate(CountTokensRequestIn, body), None)
            self.pipeline.router.resolve(request.model)  # an unknown model is a 404 here too
            answer = orjson.dumps({"input_tokens": count_prompt_tokens(request)})
        except ClientDisconnected:
            return
        except Exception as exc:
            await self._error(send, scope, to_api_error(exc), headers)
            return
        await send_json(send, 200, answer, [*headers, overhead_header(scope)])

    async def _error(self, send: Send, scope: Scope, error: ApiError, headers: RawHeaders) -> None:
        error = error.for_anthropic()
        request_id = scope.get("state", {}).get("request_id", "")
        extra = [(k.lower().encode(), v.encode()) for k, v in error.headers().items()]
        await send_json(send, error.status, error.anthropic_body(request_id), [*headers, *extra, overhead_header(scope)])
