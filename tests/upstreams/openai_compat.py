"""A lean OpenAI-compatible upstream emulator.

Two jobs: (1) the reference "generic OpenAI-compatible provider" for gateway
tests (exact wire format, tool calls, reasoning_content, error envelopes,
failure injection, disconnect detection), and (2) the benchmarks' "direct"
target, so the default path is pre-encoded and cached: with no responder and
no tool calls, a response costs one JSON parse plus writing cached bytes.

Run standalone: ``python -m tests.upstreams.openai_compat --port N [--chunks N]``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .common import (
    EmulatorBase,
    Reply,
    completion_chunk,
    default_usage,
    dumps,
    encode_sse,
    estimate_tokens,
    split_even,
    usage_chunk,
    use_uvloop,
)

__all__ = ["CHAT_PATH", "MODELS_PATH", "OpenAICompatEmulator", "Reply", "openai_error"]

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
DEFAULT_ANSWER = "Hello! How can I help you today?"
_CACHE_LIMIT = 64

ReplyFactory = Callable[[dict[str, Any]], "Reply | str"]


def openai_error(
    message: str, err_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


NO_KEY = openai_error(
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    "invalid_request_error",
)
DEFAULT_ERRORS: dict[int, dict[str, Any]] = {
    400: openai_error("Invalid request.", "invalid_request_error"),
    401: openai_error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: openai_error("You are not allowed to sample from this model.", "invalid_request_error"),
    404: openai_error(
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: openai_error(
        "Rate limit reached for requests. Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: openai_error(
        "The server had an error while processing your request. Sorry about that!", "server_error"
    ),
    502: openai_error("Bad gateway.", "server_error"),
    503: openai_error(
        "The engine is currently overloaded, please try again later.", "server_error"
    ),
}


def bearer_key(request: web.Request) -> str | None:
    """The key from ``Authorization: Bearer <key>``, if present."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def normalise_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``{name, arguments, id?}`` specs -> OpenAI ``tool_calls`` entries."""
    out = []
    for call in calls:
        args = call.get("arguments", "")
        out.append(
            {
                "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
        )
    return out


def stream_deltas(
    answer: str, reasoning: str | None, tool_calls: list[dict[str, Any]] | None, chunks: int
) -> list[dict[str, Any]]:
    """The sequence of ``delta`` objects OpenAI would stream for a reply.

    Tool calls follow OpenAI's fragmenting: the first delta of each call has
    index/id/type/name and empty arguments, later deltas only index and an
    arguments fragment.
    """
    deltas: list[dict[str, Any]] = []
    has_text = bool(answer or reasoning or not tool_calls)
    if has_text:
        deltas.append({"role": "assistant", "content": ""})
    deltas += [{"reasoning_content": p} for p in split_even(reasoning or "", chunks)]
    deltas += [{"content": p} for p in split_even(answer, chunks)]
    for index, call in enumerate(tool_calls or []):
        head: dict[str, Any] = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        first: dict[str, Any] = {"tool_calls": [head]}
        if not deltas:
            first = {"role": "assistant", "content": None, **first}
        deltas.append(first)
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": frag}}]}
            for frag in split_even(call["function"]["arguments"], chunks)
        ]
    return deltas


class OpenAICompatEmulator(EmulatorBase):
    """OpenAI ``/v1/models`` and ``/v1/chat/completions`` on loopback."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.models: list[str] = ["fake-model"]
        #: 404 model_not_found for models not in ``models``
        self.strict_models = False
        #: required bearer key; None accepts anything (including no key)
        self.api_key: str | None = None
        self.answer = DEFAULT_ANSWER
        self.reasoning: str | None = None
        #: list of {"name", "arguments": str | dict, "id"?}; replaces the text reply
        self.tool_calls: list[dict[str, Any]] | None = None
        #: fixed usage; None = derived from answer/reasoning (prompt_tokens 10)
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        #: pieces each part (reasoning, answer, each tool call's arguments) is cut into
        self.stream_chunks = 4
        self.responder: ReplyFactory | None = None
        #: put the matched stop sequence in ``choices[0].stop_reason`` (vLLM's field)
        self.report_stop_reason = False
        self.matched_stop: str | None = None
        self._cache: dict[tuple[Any, ...], Any] = {}

    # -- app ----------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(MODELS_PATH, self.guard(self._handle_models))
        app.router.add_post(CHAT_PATH, self.guard(self._handle_chat))
        return app

    def default_error_body(self, status: int) -> Any:
        return DEFAULT_ERRORS.get(status, openai_error(f"HTTP {status}", "server_error"))

    # -- auth -----------------------------------------------------------------------

    def _auth_error(self, request: web.Request) -> web.Response | None:
        expected = self.api_key
        if expected is None:
            return None
        key = bearer_key(request)
        if key is None:
            return self.error_response(401, NO_KEY)
        if key != expected:
            redacted = key[:3] + "*" * max(0, len(key) - 7) + key[-4:]
            message = (
                f"Incorrect API key provided: {redacted}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            return self.error_response(
                401, openai_error(message, "invalid_request_error", "invalid_api_key")
            )
        return None

    # -- handlers -------------------------------------------------------------------

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "emulator"} for m in self.models
        ]
        return web.json_response({"object": "list", "data": data}, dumps=dumps)

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        recorded.token = bearer_key(request)
        await self.wait_first_byte()
        failure = self.take_failure()
        if failure is not None:
            return self.failure_response(failure)
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        body = recorded.json
        invalid = self._validate(body)
        if invalid is not None:
            return invalid
        model = str(body["model"])
        stream = bool(body.get("stream"))
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, dict) and bool(options.get("include_usage"))
        stops = body.get("stop")
        if self.responder is None and self.tool_calls is None and not stops:
            return await self._cached_reply(request, model, stream, include_usage)
        reply = self._scripted_reply(body)
        if stops:
            reply = self._apply_stop(reply, [stops] if isinstance(stops, str) else list(stops))
        return await self._reply(request, reply, model, stream, include_usage, body)

    def _apply_stop(self, reply: Reply, stops: list[str]) -> Reply:
        """Cut the answer before the first stop sequence, as OpenAI does (the sequence is not sent).

        With ``report_stop_reason`` the finish choice also says which sequence matched, as vLLM
        does in ``stop_reason``; OpenAI itself does not say.
        """
        self.matched_stop = None
        found = [(reply.answer.find(s), s) for s in stops if s and s in reply.answer]
        if not found:
            return reply
        at, stop = min(found)
        self.matched_stop = stop
        return Reply(reasoning=reply.reasoning, answer=reply.answer[:at], usage=reply.usage,
                     finish_reason="stop", tool_calls=reply.tool_calls)

    def _validate(self, body: Any) -> web.Response | None:
        if not isinstance(body, dict):
            message = "We could not parse the JSON body of your request."
            return self.error_response(400, openai_error(message, "invalid_request_error"))
        if not isinstance(body.get("messages"), list):
            message = "Missing required parameter: 'messages'."
            return self.error_response(
                400, openai_error(message, "invalid_request_error", None, "messages")
            )
        model = body.get("model")
        if not isinstance(model, str) or (self.strict_models and model not in self.models):
            message = f"The model `{model}` does not exist or you do not have access to it."
            return self.error_response(
                404, openai_error(message, "invalid_request_error", "model_not_found")
            )
        return None

    def _scripted_reply(self, body: dict[str, Any]) -> Reply:
        if self.responder is not None:
            made = self.responder(body)
            return Reply(answer=made) if isinstance(made, str) else made
        return Reply(
            reasoning=self.reasoning or "",
            answer=self.answer if self.tool_calls is None else "",
            usage=self.usage,
            finish_reason=self.finish_reason,
            tool_calls=self.tool_calls,
        )

    # -- responses --------------------------------------------------------------------

    async def _cached_reply(
        self, request: web.Request, model: str, stream: bool, include_usage: bool
    ) -> web.StreamResponse:
        """Fast path: the reply depends only on settings, so encode it once."""
        usage_key = None if self.usage is None else dumps(self.usage)
        key = (
            model,
            stream,
            include_usage,
            self.answer,
            self.reasoning,
            self.stream_chunks,
            usage_key,
            self.finish_reason,
            self.line_ending,
        )
        cached = self._cache.get(key)
        if cached is None:
            reply = Reply(
                reasoning=self.reasoning or "",
                answer=self.answer,
                usage=self.usage,
                finish_reason=self.finish_reason,
            )
            cached = self._encode(reply, model, stream, include_usage, None)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = cached
        if stream:
            return await self.send_stream(request, cached, self.stream_settings())
        return await self.send_body(request, cached)

    async def _reply(
        self,
        request: web.Request,
        reply: Reply,
        model: str,
        stream: bool,
        include_usage: bool,
        body: dict[str, Any],
    ) -> web.StreamResponse:
        encoded = self._encode(reply, model, stream, include_usage, body)
        if stream:
            return await self.send_stream(request, encoded, self.stream_settings())
        return await self.send_body(request, encoded)

    def _usage(self, reply: Reply, body: dict[str, Any] | None) -> dict[str, Any]:
        if reply.usage is not None:
            return reply.usage
        if body is not None:
            return default_usage(body, reply.reasoning, reply.answer)
        completion = estimate_tokens(reply.reasoning) + estimate_tokens(reply.answer)
        return {
            "prompt_tokens": 10,
            "completion_tokens": completion,
            "total_tokens": 10 + completion,
        }

    def _encode(
        self,
        reply: Reply,
        model: str,
        stream: bool,
        include_usage: bool,
        body: dict[str, Any] | None,
    ) -> Any:
        """Encode a reply as a JSON body (bytes) or a list of SSE events."""
        tool_calls = normalise_tool_calls(reply.tool_calls) if reply.tool_calls else None
        finish = reply.finish_reason or ("tool_calls" if tool_calls else "stop")
        usage = self._usage(reply, body)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:29]}", int(time.time())
        matched = self.matched_stop if self.report_stop_reason and body is not None and body.get("stop") else None
        if not stream:
            completion = self._completion(reply, tool_calls, finish, usage, cid, created, model)
            if matched:
                completion["choices"][0]["stop_reason"] = matched
            return dumps(completion).encode()
        deltas = stream_deltas(
            reply.answer, reply.reasoning, tool_calls, max(1, self.stream_chunks)
        )
        chunks = [completion_chunk(cid, created, model, d) for d in deltas]
        chunks.append(completion_chunk(cid, created, model, {}, finish))
        if matched:
            chunks[-1]["choices"][0]["stop_reason"] = matched
        if include_usage:
            for chunk in chunks:
                chunk["usage"] = None
            chunks.append(usage_chunk(cid, created, model, usage))
        le = self.line_ending
        return [*(encode_sse(dumps(c), le) for c in chunks), encode_sse("[DONE]", le)]

    @staticmethod
    def _completion(
        reply: Reply,
        tool_calls: list[dict[str, Any]] | None,
        finish: str,
        usage: dict[str, Any],
        cid: str,
        created: int,
        model: str,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.answer if (reply.answer or not tool_calls) else None,
            "refusal": None,
        }
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": usage,
        }


# ---------------------------------------------------------------------------
# Standalone entry point (benchmarks)
# ---------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="OpenAI-compatible upstream emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=4, help="streamed content chunks")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--answer", default=None, help="fixed answer text")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument(
        "--model", action="append", default=None, help="served model id (repeatable)"
    )
    parser.add_argument("--record", action="store_true", help="keep a request log in memory")
    parser.add_argument("--uvloop", action="store_true", help="serve on uvloop if installed")
    return parser.parse_args(argv)


def configure_from_args(emu: OpenAICompatEmulator, args: argparse.Namespace) -> None:
    """Apply CLI options; a long answer is generated so --chunks N really yields N chunks."""
    emu.stream_chunks = max(1, args.chunks)
    emu.chunk_delay = args.delay
    emu.api_key = args.api_key
    emu.record_requests = args.record
    if args.model:
        emu.models = list(args.model)
    if args.answer is not None:
        emu.answer = args.answer
    elif len(emu.answer) < emu.stream_chunks:
        emu.answer = " ".join(f"tok{i}" for i in range(emu.stream_chunks))


def main(argv: list[str] | None = None) -> None:
    """Serve in the foreground until interrupted."""
    args = _parse_args(argv)
    emu = OpenAICompatEmulator(args.host, args.port)
    configure_from_args(emu, args)
    if args.uvloop:
        use_uvloop(emu)
    base = emu.start()
    print(f"openai-compat emulator listening on {base}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()


if __name__ == "__main__":
    main()
