"""Kimi (www.kimi.com, the Connect RPC generation) upstream emulator.

Implements what /work/shared/protocols/kimi.md describes for Gen C/D, awkward parts included:

- `ChatService/Chat`: Connect streaming both ways (a request without the envelope gets
  `invalid_argument`), Bearer or `kimi-auth` cookie; a stream of patches (`op: set` carrying the
  first piece of every block, `append` for the rest, comma-joined masks on tool blocks, think
  blocks with summaries and stages, search tool blocks, `message.refs.searchChunks` and
  private-use citation markers, heartbeats, `TYPE_MODEL_DEGRADE` notifications, `done`, the
  end-of-stream frame), writable in slices at arbitrary byte boundaries; errors as end-of-stream
  frames with base64 protobuf details; one reply streaming per account at a time (a second gets
  `chat.user_stream_pushing`); chats kept server-side and continued with `chat_id` + `parent_id`.
- `AuthService/RefreshToken` (plain JSON) and the legacy `GET /api/auth/token/refresh`: both
  tokens rotate and the old refresh token dies; access tokens expire (`access_ttl`) and are
  refused with 401 `unauthenticated` until refreshed.
- `/api/device/register` (guest): a 19-digit device id in the header and the body.
- `ConfigService/GetAvailableModels`, the file upload and `GetFileParseProgress`.
- Variants the notes allow: an answer that arrives whole in the assistant `message` frame's `blocks`
  (and may be streamed in block frames after it), a stream that ends at `message.status`
  COMPLETED with no `done` (`ending`), a gRPC-web trailer frame (flag 0x80), and Cloudflare's bot
  challenge page (HTTP 403, text/html) in place of any endpoint's answer (`challenge`).

The "model" (`respond`) answers from the chat it is in, so a test can tell a continued chat
from a new one: asked where the user is from, it looks through that chat's earlier turns.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web

from .common import EmulatorBase, RecordedRequest, dumps, split_even

__all__ = ["CHALLENGE_PAGE", "CHAT_PATH", "KimiEmulator", "KimiReply", "connect_frame", "protobuf_text"]

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
CATALOG_PATH = "/apiv2/kimi.gateway.config.v1.ConfigService/GetAvailableModels"
REFRESH_PATH = "/api/account.gateway.v1.AuthService/RefreshToken"
LEGACY_REFRESH_PATH = "/api/auth/token/refresh"
REGISTER_PATH = "/api/device/register"
UPLOAD_PATH = "/apiv2-files/file/upload"
PROGRESS_PATH = "/apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONNECT_CODES = {400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied", 404: "not_found",
                 409: "aborted", 429: "resource_exhausted", 500: "internal", 502: "unavailable",
                 503: "unavailable", 504: "deadline_exceeded"}
TOOL_REFUSAL = "抱歉，我无法调用外部工具或函数，但我可以直接回答你的问题。"
CHALLENGE_PAGE = ('<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
                  '<meta http-equiv="refresh" content="360"></head><body><noscript><div id="challenge-error-text">'
                  'Enable JavaScript and cookies to continue</div></noscript>'
                  '<script src="/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1"></script></body></html>')
GRPC_WEB_TRAILER = b"grpc-status: 0\r\ngrpc-message: \r\n"
_ids = itertools.count(1)


def xid() -> str:
    """A 20-character id like Kimi's."""
    return f"d{next(_ids):04d}{uuid.uuid4().hex[:15]}"


def connect_frame(payload: Any, flags: int = 0) -> bytes:
    data = payload if isinstance(payload, bytes) else dumps(payload).encode()
    return struct.pack(">BI", flags, len(data)) + data


def protobuf_text(*texts: str) -> str:
    """A base64 protobuf message whose fields 1, 2, ... hold `texts`, as Connect error details do."""
    out = b""
    for number, text in enumerate(texts, start=1):
        data = text.encode()
        out += bytes([(number << 3) | 2]) + _varint(len(data)) + data
    return base64.b64encode(out).decode().rstrip("=")


def _varint(value: int) -> bytes:
    out = b""
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


@dataclass
class KimiReply:
    """What the scripted model says: reasoning (thinking models), answer text, search sources.

    `cite` puts a citation marker after the answer's first sentence for each (1-based) source
    number listed; `whole` sends the answer in one `set` frame (an answer that arrives whole);
    `in_message` puts the whole answer (and reasoning) in the assistant `message` frame's `blocks`
    instead of block frames, `streamed_too` streams those blocks in block frames after it as well;
    `flagged` sends the reasoning the older way, as text flagged "thinking", in the answer's own block,
    which `flags: "answer"` then switches to the answer.
    """

    text: str = "你好！有什么可以帮你的吗？"
    thinking: str = ""
    sources: list[dict[str, str]] = field(default_factory=list)
    cite: list[int] = field(default_factory=list)
    whole: bool = False
    degrade: bool = False
    in_message: bool = False
    streamed_too: bool = False
    flagged: bool = False


@dataclass
class ChatCall:
    """One chat request as the emulator understood it."""

    user: str
    chat_id: str
    new_chat: bool
    parent_id: str | None
    text: str
    files: list[str]
    scenario: str
    thinking: bool
    search: bool
    model: str | None
    token: str


@dataclass
class _Chat:
    owner: str
    messages: list[dict[str, str]] = field(default_factory=list)  # {"id", "role", "text", "parent"}


class KimiEmulator(EmulatorBase):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.secret = "kimi-emulator-secret-" + uuid.uuid4().hex + uuid.uuid4().hex  # HS512 wants 64 bytes
        #: the scripted model: a KimiReply, or a function of the ChatCall (and the chat's history)
        self.reply: KimiReply | None = None
        self.respond: Callable[[ChatCall, list[dict[str, str]]], KimiReply | str] | None = None
        self.refuse_tools = False  # K2.6's reported refusal of prompt-described tools
        self.chunks = 6  # pieces per block
        self.heartbeats = True
        self.access_ttl = 900.0
        self.connect_refresh = True  # False: the Connect refresh service answers 404 (legacy only)
        self.rotate_on_legacy = True
        #: False: the Connect refresh hands the same refresh token back (tests that are not about rotation)
        self.rotate_refresh = True
        #: hold refresh requests (before rotating) until this event is set
        self.refresh_gate: threading.Event | None = None
        self.refresh_calls = 0
        self.legacy_refresh_calls = 0
        self.registrations = 0
        self.guest_quota: int | None = None  # chats a guest may start
        self.catalog: list[dict[str, Any]] | None = None  # None: GetAvailableModels answers 503
        self.default_scenario = "SCENARIO_K2D5"
        #: how a stream ends: "connect" (`done`, then the end-of-stream frame), "completed" (the body ends
        #: right after `message.status` COMPLETED), "grpc-web" (then a gRPC-web trailer frame, flag 0x80)
        self.ending = "connect"
        self.challenges: dict[str, int] = {}  # path → how many of its next requests get the challenge page
        self.localized_details = False  # error details as `debug.localizedMessage` objects, not base64 protobuf
        #: an error to end the next stream(s) with: (code, message, detail text, after the answer starts?)
        self.trailer_errors: list[tuple[str, str, str, bool]] = []
        self.chat_calls: list[ChatCall] = []
        self.uploads: list[bytes] = []
        self.upload_status = "PROCESS_STATUS_SUCCESS"
        self.upload_fails = False
        self.max_active: dict[str, int] = {}
        self.busy_refusals = 0
        self._active: dict[str, int] = {}
        self._external: dict[str, int] = {}  # streams held open "by another client" (hold_stream)
        self._chats: dict[str, _Chat] = {}
        self._refresh: dict[str, str] = {}  # live refresh token → user
        self._dead_refresh: set[str] = set()
        self._access: dict[str, str] = {}  # live access token → user
        self._guest_chats: dict[str, int] = {}
        self._files: dict[str, str] = {}

    # -- app ---------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post(CHAT_PATH, self.guard(self._challenged(self._chat)))
        app.router.add_post(CATALOG_PATH, self.guard(self._catalog))
        app.router.add_post(REFRESH_PATH, self.guard(self._challenged(self._refresh_connect)))
        app.router.add_get(LEGACY_REFRESH_PATH, self.guard(self._challenged(self._refresh_legacy)))
        app.router.add_post(REGISTER_PATH, self.guard(self._register))
        app.router.add_post(UPLOAD_PATH, self.guard(self._upload))
        app.router.add_post(PROGRESS_PATH, self.guard(self._progress))
        return app

    def default_error_body(self, status: int) -> Any:
        return {"code": CONNECT_CODES.get(status, "unknown"), "message": f"HTTP {status}"}

    def challenge(self, path: str = CHAT_PATH, times: int = 1) -> None:
        """The next `times` requests to `path` get Cloudflare's bot challenge page instead of an answer."""
        with self._lock:
            self.challenges[path] = self.challenges.get(path, 0) + times

    def _challenged(self, handler: Handler) -> Handler:
        async def challenged(request: web.Request) -> web.StreamResponse:
            with self._lock:
                left = self.challenges.get(request.path, 0)
                self.challenges[request.path] = max(0, left - 1)
            if not left:
                return await handler(request)
            await self.record(request)
            return self.error_response(403, CHALLENGE_PAGE, {"cf-mitigated": "challenge", "Server": "cloudflare"},
                                       "text/html")

        return challenged

    # -- tokens ------------------------------------------------------------------------------

    def _jwt(self, user: str, typ: str, ttl: float, **extra: Any) -> str:
        now = time.time()
        claims = {"iss": "account", "typ": typ, "app_id": "kimi", "sub": user, "jti": uuid.uuid4().hex,
                  "iat": int(now), "exp": int(now + ttl), **extra}
        return jwt.encode(claims, self.secret, algorithm="HS512")

    def mint_refresh_token(self, user: str | None = None) -> str:
        """A refresh token for `user` (a new account if None), valid until used once."""
        user = user or xid()
        token = self._jwt(user, "refresh", 90 * 86400)
        with self._lock:
            self._refresh[token] = user
        return token

    def mint_access_token(self, user: str) -> str:
        token = self._jwt(user, "access", self.access_ttl, device_id="7" + "0" * 18, ssid="1" + "0" * 18)
        with self._lock:
            self._access[token] = user
        return token

    def expire_access_tokens(self) -> None:
        """Every access token handed out is refused from now on (401 until refreshed)."""
        with self._lock:
            self._access.clear()

    def refresh_token_alive(self, token: str) -> bool:
        with self._lock:
            return token in self._refresh

    def user_of(self, token: str) -> str | None:
        with self._lock:
            return self._refresh.get(token)

    def _user_for_access(self, request: web.Request) -> tuple[str | None, str]:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.cookies.get("kimi-auth", "")
        with self._lock:
            user = self._access.get(token)
        if user is not None:
            try:
                jwt.decode(token, self.secret, algorithms=["HS512"])
            except jwt.InvalidTokenError:
                user = None
        return user, token

    # -- auth handlers -------------------------------------------------------------------------

    async def _hold_refresh(self, request: web.Request) -> bool:
        """Wait at the gate; False if the client left meanwhile (the refresh was never processed)."""
        gate = self.refresh_gate
        while gate is not None and not gate.is_set():
            await asyncio.sleep(0.02)
            if request.transport is None or request.transport.is_closing():
                return False
        return True

    async def _refresh_connect(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        with self._lock:
            self.refresh_calls += 1
        if not self.connect_refresh:
            return self.error_response(404, "404 page not found")
        if "authorization" in recorded.headers:
            return self.error_response(400, {"code": "invalid_argument", "message": "unexpected authorization"})
        body = recorded.json if isinstance(recorded.json, dict) else {}
        token = body.get("refresh_token") or body.get("refreshToken") or ""
        if not await self._hold_refresh(request):
            return web.Response(status=499)
        tokens = self._rotate(str(token), rotate=self.rotate_refresh)
        if tokens is None:
            return self.error_response(401, {"code": "unauthenticated", "message": "invalid claims"})
        return web.json_response({"accessToken": tokens[0], "refreshToken": tokens[1]})

    async def _refresh_legacy(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        with self._lock:
            self.legacy_refresh_calls += 1
        auth = request.headers.get("Authorization", "")
        if not await self._hold_refresh(request):
            return web.Response(status=499)
        tokens = self._rotate(auth[7:].strip(), rotate=self.rotate_on_legacy)
        if tokens is None:
            return self.error_response(401, {"error_type": "auth.token.invalid", "message": "您的授权已过期，请重新登录"})
        return web.json_response({"access_token": tokens[0], "refresh_token": tokens[1]})

    def _rotate(self, token: str, *, rotate: bool) -> tuple[str, str] | None:
        with self._lock:
            user = self._refresh.get(token)
            if user is None:
                return None
            if rotate:
                del self._refresh[token]
                self._dead_refresh.add(token)
        fresh = self.mint_refresh_token(user) if rotate else token
        return self.mint_access_token(user), fresh

    async def _register(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        device = recorded.headers.get("x-msh-device-id", "")
        body = recorded.json if isinstance(recorded.json, dict) else {}
        if not (device.isdigit() and len(device) >= 16) or str(body.get("device_id")) != device:
            return self.error_response(422, {"code": "invalid_argument", "message": "device_id is required"})
        with self._lock:
            self.registrations += 1
        token = self.mint_access_token(f"guest-{device}")
        response = web.json_response({"access_token": token, "refresh_token": self._jwt(f"guest-{device}", "refresh", 86400)})
        response.set_cookie("kimi-auth", token)
        return response

    # -- catalog and files ---------------------------------------------------------------------

    async def _catalog(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        user, _ = self._user_for_access(request)
        if user is None:
            return self.error_response(401, {"code": "unauthenticated", "message": "unauthenticated"})
        if self.catalog is None:
            return self.error_response(503, {"code": "unavailable", "message": "config service unavailable"})
        return web.json_response({"availableModels": self.catalog, "defaultScenario": self.default_scenario})

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        user, _ = self._user_for_access(request)
        if user is None:
            return self.error_response(401, {"code": "unauthenticated", "message": "unauthenticated"})
        if self.upload_fails:
            await request.read()
            return self.error_response(500, {"code": "internal", "message": "file storage unavailable"})
        reader = await request.multipart()
        part = await reader.next()
        if part is None or getattr(part, "name", None) != "file":
            return self.error_response(400, {"code": "invalid_argument", "message": "no file part"})
        data = await part.read()  # type: ignore[union-attr]
        file_id = str(uuid.uuid4())
        with self._lock:
            self.uploads.append(bytes(data))
            self._files[file_id] = user
        return web.json_response({"file": {"id": file_id, "meta": {"name": part.filename, "sizeBytes": len(data),  # type: ignore[union-attr]
                                                                     "type": "FILE_TYPE_IMAGE"}}})

    async def _progress(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        body = recorded.json if isinstance(recorded.json, dict) else {}
        ids = body.get("file_ids") or []
        return web.json_response({"progresses": [{"fileId": i, "status": self.upload_status} for i in ids]})

    # -- chat --------------------------------------------------------------------------------

    def hold_stream(self, user: str) -> None:
        """Another client (a browser) starts streaming on `user`'s account."""
        with self._lock:
            self._external[user] = self._external.get(user, 0) + 1

    def release_stream(self, user: str) -> None:
        with self._lock:
            self._external[user] = max(0, self._external.get(user, 0) - 1)

    def chat(self, chat_id: str) -> list[dict[str, str]]:
        with self._lock:
            return list(self._chats[chat_id].messages) if chat_id in self._chats else []

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return self.requests_to(CHAT_PATH)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        await self.wait_first_byte()
        failure = self.take_failure()
        if failure is not None:
            return self.failure_response(failure)
        if recorded.headers.get("content-type", "").split(";")[0] != "application/connect+json":
            return self.error_response(415, {"code": "invalid_argument", "message": "unsupported content type"})
        body = _unenvelope(recorded.body)
        if body is None:
            return await self._end_with_error(request, "invalid_argument", "protocol error: missing envelope", "")
        user, token = self._user_for_access(request)
        if user is None:
            return self.error_response(401, {"code": "unauthenticated", "message": "token is expired or invalid"})
        recorded.token = token
        try:
            call = self._call(user, token, body)
        except LookupError as exc:
            return await self._end_with_error(request, "not_found", str(exc), "REASON_CHAT_NOT_FOUND")
        except ValueError as exc:
            return await self._end_with_error(request, "invalid_argument", str(exc), "")
        if user.startswith("guest-") and self.guest_quota is not None and call.new_chat:
            with self._lock:
                used = self._guest_chats[user] = self._guest_chats.get(user, 0) + 1
            if used > self.guest_quota:
                return await self._end_with_error(request, "resource_exhausted", "匿名聊天使用次数超过限制，请登录后继续",
                                                  "chat.anonymous_quota")
        with self._lock:
            busy = self._active.get(user, 0) + self._external.get(user, 0) > 0
            if busy:
                self.busy_refusals += 1
            else:
                self._active[user] = self._active.get(user, 0) + 1
                self.max_active[user] = max(self.max_active.get(user, 0), self._active[user])
        if busy:
            return await self._end_with_error(request, "failed_precondition", "当前对话正在生成中，请稍后再试",
                                              "chat.user_stream_pushing")
        try:
            return await self._answer(request, call)
        finally:
            with self._lock:
                self._active[user] -= 1

    def _call(self, user: str, token: str, body: dict[str, Any]) -> ChatCall:
        message = body.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("blocks"), list):
            raise ValueError("message.blocks is required")
        text = "".join(b["text"].get("content", "") for b in message["blocks"]
                       if isinstance(b, dict) and isinstance(b.get("text"), dict))
        files = [b["file"]["id"] for b in message["blocks"] if isinstance(b, dict) and isinstance(b.get("file"), dict)]
        chat_id = body.get("chat_id") or body.get("chatId") or ""
        parent = message.get("parent_id") or message.get("parentId")
        with self._lock:
            if chat_id:
                chat = self._chats.get(chat_id)
                if chat is None or chat.owner != user:
                    raise LookupError(f"chat {chat_id} not found")
                if parent and not any(m["id"] == parent and m["role"] == "assistant" for m in chat.messages):
                    raise LookupError(f"message {parent} not found in chat {chat_id}")
                new_chat = False
            else:
                chat_id = xid()
                self._chats[chat_id] = _Chat(user)
                new_chat = True
            for file_id in files:
                if self._files.get(file_id) != user:
                    raise ValueError(f"file {file_id} not found")
        tools = body.get("tools") or []
        options = body.get("options") or {}
        call = ChatCall(user, chat_id, new_chat, parent, text, files, str(body.get("scenario")),
                        bool(options.get("thinking")), any(t.get("type") == "TOOL_TYPE_SEARCH" for t in tools),
                        options.get("model"), token)
        with self._lock:
            self.chat_calls.append(call)
        return call

    def _reply_for(self, call: ChatCall, history: list[dict[str, str]]) -> KimiReply:
        if self.refuse_tools and re.search(r"<tool_call_[A-Za-z0-9]+>|tool_call", call.text):
            return KimiReply(text=TOOL_REFUSAL)
        if self.respond is not None:
            made = self.respond(call, history)
            return KimiReply(text=made) if isinstance(made, str) else made
        if self.reply is not None:
            return self.reply
        return KimiReply(text=_remembering_answer(call.text, history))

    async def _answer(self, request: web.Request, call: ChatCall) -> web.StreamResponse:
        history = self.chat(call.chat_id)
        reply = self._reply_for(call, history)
        user_id, answer_id = xid(), xid()
        with self._lock:
            chat = self._chats[call.chat_id]
            chat.messages.append({"id": user_id, "role": "user", "text": call.text, "parent": call.parent_id or ""})
        frames = self._frames(call, reply, user_id, answer_id)
        error = self.trailer_errors.pop(0) if self.trailer_errors else None
        if error is not None:
            code, message, detail, after_start = error
            keep = frames[: len(frames) // 2] if after_start else frames[:3]  # some of the answer, or none of it
            frames = [*keep, self._error_frame(code, message, detail)]
        else:
            with self._lock:
                chat.messages.append({"id": answer_id, "role": "assistant", "text": reply.text, "parent": user_id})
        return await self.send_stream(request, frames, self.stream_settings(), "application/connect+json")

    def _frames(self, call: ChatCall, reply: KimiReply, user_id: str, answer_id: str) -> list[bytes]:
        scenario = call.scenario
        offset = itertools.count(1)
        out: list[dict[str, Any]] = [
            {"op": "set", "eventOffset": next(offset), "chat": {"id": call.chat_id, "name": "未命名会话",
                                                                 "createTime": "2026-01-01T00:00:00Z"}},
            {"op": "set", "mask": "message", "eventOffset": next(offset),
             "message": {"id": user_id, "parentId": call.parent_id or "", "role": "user",
                         "status": "MESSAGE_STATUS_COMPLETED", "scenario": scenario}},
            {"op": "set", "mask": "message", "eventOffset": next(offset),
             "message": {"id": answer_id, "parentId": user_id, "role": "assistant",
                         "status": "MESSAGE_STATUS_GENERATING", "scenario": scenario}},
        ]
        if reply.in_message:  # the answer whole, in the message's blocks
            blocks = [{"id": "1_0", "think": {"content": reply.thinking}}] if reply.thinking else []
            out[-1]["message"]["blocks"] = [*blocks, {"id": "3_0", "text": {"content": self._cited(reply)}}]
            if not reply.streamed_too:
                out[-1]["message"]["status"] = "MESSAGE_STATUS_COMPLETED"
        if reply.degrade:
            out.append({"op": "set", "mask": "notification", "eventOffset": next(offset),
                        "notification": {"type": "TYPE_MODEL_DEGRADE", "content": "当前使用人数较多，已为你切换到轻量模型"}})
        if self.heartbeats:
            out.append({"heartbeat": {}})
        streamed = not reply.in_message or reply.streamed_too
        if reply.thinking and streamed:
            out += self._flagged_frames(reply.thinking, offset) if reply.flagged else self._think_frames(reply.thinking, offset)
        if reply.sources:
            out += self._search_frames(reply.sources, answer_id, offset)
        if streamed:
            out += self._text_frames(self._cited(reply), reply.whole, offset, reply.flagged and bool(reply.thinking))
        out += [
            {"op": "set", "mask": "chat.name", "eventOffset": next(offset), "chat": {"name": call.text[:10]}},
            {"op": "set", "mask": "message.status", "eventOffset": next(offset),
             "message": {"id": answer_id, "status": "MESSAGE_STATUS_COMPLETED"}},
        ]
        return [connect_frame(f) for f in out] + self._ending(next(offset))

    def _ending(self, offset: int) -> list[bytes]:
        """What follows `message.status` COMPLETED, as `ending` says."""
        if self.ending == "completed":
            return []
        if self.ending == "grpc-web":
            return [connect_frame(GRPC_WEB_TRAILER, flags=0x80)]
        return [connect_frame({"eventOffset": offset, "done": {}}), connect_frame({}, flags=0x02)]

    def _think_frames(self, thinking: str, offset: itertools.count[int]) -> list[dict[str, Any]]:
        pieces = split_even(thinking, self.chunks)
        frames: list[dict[str, Any]] = [
            {"op": "set", "mask": "block.multiStage", "eventOffset": next(offset),
             "block": {"id": "0_0", "multiStage": {"stages": [{"name": "STAGE_NAME_THINKING", "status": "STAGE_STATUS_START"}]}}},
            {"op": "set", "mask": "block.think", "eventOffset": next(offset), "block": {"id": "1_0", "think": {"content": pieces[0]}}},
        ]
        for piece in pieces[1:]:
            frames.append({"op": "append", "mask": "block.think.content", "eventOffset": next(offset),
                           "block": {"id": "1_0", "think": {"content": piece}}})
            if self.heartbeats:
                frames.append({"heartbeat": {}})
        frames += [
            {"op": "set", "mask": "block.think.summary", "eventOffset": next(offset),
             "block": {"id": "1_0", "think": {"summary": "分析问题"}}},
            {"op": "set", "mask": "block.multiStage", "eventOffset": next(offset),
             "block": {"id": "0_0", "multiStage": {"stages": [{"name": "STAGE_NAME_THINKING", "status": "STAGE_STATUS_END"}]}}},
        ]
        return frames

    def _flagged_frames(self, thinking: str, offset: itertools.count[int]) -> list[dict[str, Any]]:
        """Reasoning as the answer block's own text, flagged "thinking"; then the flag says "answer"."""
        return [
            {"op": "set", "mask": "block.text,block.text.flags", "eventOffset": next(offset),
             "block": {"id": "3_0", "text": {"content": thinking, "flags": "thinking"}}},
            {"op": "set", "mask": "block.text.flags", "eventOffset": next(offset),
             "block": {"id": "3_0", "text": {"flags": "answer"}}},
        ]

    def _search_frames(self, sources: list[dict[str, str]], answer_id: str, offset: itertools.count[int]) -> list[dict[str, Any]]:
        call_id = "call_" + uuid.uuid4().hex[:8]
        chunks = [{"id": f"chunk-{n}", "base": {"title": s["title"], "url": s["url"], "siteName": s.get("site", ""),
                                                "snippet": "…"}} for n, s in enumerate(sources, start=1)]
        return [
            {"op": "set", "eventOffset": next(offset), "block": {"id": "2_0", "tool": {"name": "web_search", "toolCallId": call_id,
                                                                                       "status": "TOOL_STATUS_RUNNING"}}},
            {"op": "set", "mask": "block.tool.args,block.tool.status,block.tool.toolCallId", "eventOffset": next(offset),
             "block": {"id": "2_0", "tool": {"args": '{"queries":["q"]}', "status": "TOOL_STATUS_SUCCESS", "toolCallId": call_id}}},
            {"op": "set", "mask": "message.refs.searchChunks", "eventOffset": next(offset),
             "message": {"id": answer_id, "refs": {"searchChunks": chunks}}},
        ]

    @staticmethod
    def _cited(reply: KimiReply) -> str:
        if not reply.cite:
            return reply.text
        markers = "".join(f"\ue200cite\ue202web_search:0#{n}:~:text=src\ue201" for n in reply.cite)
        head, sep, rest = reply.text.partition("。")
        return head + markers + sep + rest

    def _text_frames(self, text: str, whole: bool, offset: itertools.count[int],
                     appended: bool = False) -> list[dict[str, Any]]:
        pieces = [text] if whole else split_even(text, self.chunks) or [""]
        frames: list[dict[str, Any]] = [{"op": "set", "mask": "block.text", "eventOffset": next(offset),
                                         "block": {"id": "3_0", "text": {"content": pieces[0]}}}]
        if appended:  # the block holds the reasoning already: the answer is appended to it
            frames[0].update(op="append", mask="block.text.content")
        for index, piece in enumerate(pieces[1:]):
            frames.append({"op": "append", "mask": "block.text.content", "eventOffset": next(offset),
                           "block": {"id": "3_0", "parentId": "", "text": {"content": piece}}})
            if self.heartbeats and index % 2:
                frames.append({"heartbeat": {}})
        return frames

    def _error_frame(self, code: str, message: str, detail: str) -> bytes:
        error: dict[str, Any] = {"code": code, "message": message}
        if detail and self.localized_details:
            error["details"] = [{"type": "common.error.v1.ErrorDetail",
                                 "debug": {"localizedMessage": {"locale": "zh-CN", "message": detail}}}]
        elif detail:
            error["details"] = [{"type": "common.error.v1.ErrorDetail", "value": protobuf_text(detail, message)}]
        return connect_frame({"error": error}, flags=0x02)

    async def _end_with_error(self, request: web.Request, code: str, message: str, detail: str) -> web.StreamResponse:
        """A Connect streaming error: HTTP 200, an end-of-stream frame holding it."""
        return await self.send_stream(request, [self._error_frame(code, message, detail)], self.stream_settings(),
                                      "application/connect+json")


def _unenvelope(body: bytes) -> dict[str, Any] | None:
    if len(body) < 5 or body[0] not in (0, 1):
        return None
    length = struct.unpack(">I", body[1:5])[0]
    if len(body) != 5 + length:
        return None
    try:
        parsed = json.loads(body[5:])
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _remembering_answer(text: str, history: list[dict[str, str]]) -> str:
    """The default model: answers where the user said they are from, from this chat only."""
    if "来自哪里" in text:
        earlier = " ".join(m["text"] for m in history if m["role"] == "user") + " " + text.split("来自哪里")[0]
        place = re.search(r"来自([^，。,.\s？?]+)", earlier)
        return f"你刚才说你来自{place.group(1)}。" if place else "你还没有告诉我你来自哪里。"
    if "我叫" in text:
        name = re.search(r"我叫([^，。,.\s]+)", text)
        return f"你好，{name.group(1) if name else '朋友'}！很高兴认识你。"
    return f"收到：{text[-40:]}"
