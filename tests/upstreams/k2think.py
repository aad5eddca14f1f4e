"""K2Think (Open WebUI based) upstream emulator.

Implements what /work/shared/protocols/k2think.md reconstructs: token and
guest chat endpoints, sign-in, model list, Open WebUI error bodies, the 405
WAF page, and every reply *shape* the notes consider plausible (cumulative
``{"content": …}`` snapshots that are re-rendered per event, OpenAI delta
chunks with tags or ``reasoning_content``, plain JSON). Since no real traffic
was ever captured, the gateway has to cope with all of them; the emulator
lets each be selected per test (``emu.shape``) or per request (header
``x-emu-shape``).

Run standalone (accepts any token): ``python -m tests.upstreams.k2think --port N``.
"""

from __future__ import annotations

import argparse
import itertools
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from .common import (
    EmulatorBase,
    RecordedRequest,
    Reply,
    completion_chunk,
    default_usage,
    dumps,
    encode_sse,
    split_even,
    usage_chunk,
    use_uvloop,
)

__all__ = [
    "BAD_CREDENTIALS_DETAIL",
    "CHAT_PATH",
    "DEFAULT_MODEL",
    "GUEST_CHAT_PATH",
    "MODELS_PATH",
    "SHAPES",
    "SIGNIN_PATH",
    "TOKEN_STATES",
    "K2ThinkEmulator",
    "Reply",
    "cut_text",
    "render_details",
]

DEFAULT_MODEL = "MBZUAI-IFM/K2-Think-v2"
CHAT_PATH = "/api/chat/completions"
GUEST_CHAT_PATH = "/api/guest/chat/completions"
SIGNIN_PATH = "/api/v1/auths/signin"
MODELS_PATH = "/api/models"
GUEST_PAGE_PATH = "/guest"
GUEST_TOKEN_PATH = "/api/guest/token"
GUEST_NEW_CHAT_PATH = "/api/v1/chats/guest/new"
#: what the guest chat endpoint demands (notes §1.3, open question 9): nothing; any bearer token; a JWT
#: from GUEST_TOKEN_PATH (which wants the cookie GET /guest sets); or the cookie handshake (GET /guest,
#: then GUEST_NEW_CHAT_PATH for a ``conversation_id``, both cookies and ``guest_conversation_count``)
GUEST_AUTH_MODES = ("none", "bearer", "token", "handshake")

DEFAULT_REASONING = "The user greets me. I should greet back."
DEFAULT_ANSWER = "Hello! How can I help you today?"

SHAPES = (
    "cumulative_details",
    "cumulative_think",
    "cumulative_think_duration",
    "cumulative_missing_open",
    "delta_tags",
    "delta_reasoning",
    "json",
    "json_missing_open",
)
TOKEN_STATES = ("valid", "revoked", "rate_limited", "error500", "unavailable", "forbidden")
SESSION_ID_FIELDS = ("chat_id", "id", "session_id")

NOT_AUTHENTICATED = {"detail": "Not authenticated"}
UNAUTHORIZED = {"detail": "401 Unauthorized"}
MODEL_NOT_FOUND = {"detail": "Model not found"}
NOT_FOUND_DETAIL = "We could not find what you're looking for :/"
BAD_CREDENTIALS_DETAIL = (
    "The email or password provided is incorrect. Please check for typos and try logging in again."
)
STATE_ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "revoked": (401, UNAUTHORIZED),
    "rate_limited": (429, {"detail": "Rate limit exceeded. Please try again later."}),
    "error500": (500, {"detail": "Internal Server Error"}),
    "unavailable": (503, {"detail": "Service Unavailable"}),
    "forbidden": (
        403,
        {
            "detail": "You do not have permission to access this resource. "
            "Please contact your administrator for assistance."
        },
    ),
}
WAF_PAGE = (
    "<!DOCTYPE html>\n<html>\n<head><title>405 Not Allowed</title></head>\n<body>\n"
    "<center><h1>405 Not Allowed</h1></center>\n"
    "<p>Sorry, your request has been blocked as it may cause potential threats "
    "to the server's security.</p>\n<hr><center>Aliyun WAF</center>\n</body>\n</html>\n"
)

# Markup tags whose boundaries the splitter either protects or deliberately cuts.
_TAG_RE = re.compile(r"</?(?:think|answer|details|summary)\b[^>]*>")

ReplyFactory = Callable[[dict[str, Any]], "Reply | str"]


# ---------------------------------------------------------------------------
# Rendering (pure functions; the shapes are defined here)
# ---------------------------------------------------------------------------


def quote_reasoning(text: str) -> str:
    """Open WebUI's display form: strip, then prefix each line with "> "."""
    return "\n".join(
        line if line.startswith(">") else f"> {line}" for line in text.strip().splitlines()
    )


def render_details(reasoning: str, done: bool, duration: int) -> str:
    """Open WebUI's serialisation of a reasoning block (incl. trailing newline)."""
    body = quote_reasoning(reasoning)
    if done:
        return (
            f'<details type="reasoning" done="true" duration="{duration}">\n'
            f"<summary>Thought for {duration} seconds</summary>\n{body}\n</details>\n"
        )
    return (
        '<details type="reasoning" done="false">\n'
        f"<summary>Thinking…</summary>\n{body}\n</details>\n"
    )


def wrap_answer(answer: str, tags: bool) -> str:
    return f"<answer>{answer}</answer>" if tags else answer


def cut_text(text: str, n: int, awkward: bool) -> list[str]:
    """Split into about ``n`` pieces, either keeping markup tags whole or
    deliberately cutting inside every tag (``<th`` + ``ink>``)."""
    if not text:
        return []
    n = max(1, min(n, len(text)))
    cuts = {len(text) * i // n for i in range(1, n)}
    spans = [m.span() for m in _TAG_RE.finditer(text)]
    if awkward:
        cuts.update(start + min(3, end - start - 1) for start, end in spans)
    else:
        cuts = {next((s for s, e in spans if s < c < e), c) for c in cuts}
    ordered = sorted(c for c in cuts if 0 < c < len(text))
    bounds = [0, *ordered, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def prefixes(pieces: list[str]) -> list[str]:
    """Cumulative snapshots from delta pieces."""
    out: list[str] = []
    acc = ""
    for piece in pieces:
        acc += piece
        out.append(acc)
    return out


@dataclass(frozen=True)
class RenderOptions:
    """Per-request snapshot of the rendering knobs."""

    shape: str
    chunks: int
    answer_tags: bool
    duration: int
    awkward_splits: bool
    send_usage: bool
    done_with_content: bool
    ensure_ascii: bool
    title: str
    model: str
    content_pieces: bool = False
    leak_think: str | None = None


def details_snapshots(reply: Reply, opts: RenderOptions) -> list[str]:
    """Snapshots of an Open WebUI message, re-rendered on every event."""
    snaps = [
        render_details(p, False, 0) for p in prefixes(split_even(reply.reasoning, opts.chunks))
    ]
    head = render_details(reply.reasoning, True, opts.duration) if reply.reasoning else ""
    if head:
        snaps.append(head)
    answer = wrap_answer(reply.answer, True)
    snaps.extend(head + p for p in prefixes(cut_text(answer, opts.chunks, opts.awkward_splits)))
    return snaps


def think_text(reply: Reply, opts: RenderOptions, open_tag: str) -> str:
    """``<think>R</think>A`` (or without the opening tag) as one raw string."""
    answer = wrap_answer(reply.answer, opts.answer_tags)
    if not reply.reasoning:
        return answer
    return f"{open_tag}{reply.reasoning}</think>{answer}"


def think_snapshots(reply: Reply, opts: RenderOptions) -> list[str]:
    """Growing ``<think>`` snapshots; the duration variant re-renders the
    opening tag once the reasoning is closed, like Open WebUI would."""
    open_tag = "" if opts.shape == "cumulative_missing_open" else "<think>"
    raw = think_text(reply, opts, open_tag)
    snaps = prefixes(cut_text(raw, 2 * opts.chunks, opts.awkward_splits))
    if opts.shape == "cumulative_think_duration":
        tag = f'<think duration="{opts.duration}">'
        snaps = [s.replace("<think>", tag, 1) if "</think>" in s else s for s in snaps]
    return snaps


def final_text(reply: Reply, opts: RenderOptions) -> str:
    """The whole message as the last snapshot of the shape renders it."""
    if reply.raw_content is not None:
        return reply.raw_content
    if opts.shape == "cumulative_details":
        head = render_details(reply.reasoning, True, opts.duration) if reply.reasoning else ""
        return head + wrap_answer(reply.answer, True)
    open_tag = {"cumulative_missing_open": "", "cumulative_think_duration": f'<think duration="{opts.duration}">'}
    return think_text(reply, opts, open_tag.get(opts.shape, "<think>"))


def cumulative_events(reply: Reply, opts: RenderOptions, usage: dict[str, Any]) -> list[str]:
    """``{"content": snapshot}`` events (or pieces of the text, ``content_pieces``), optional usage, then ``done``."""
    whole = final_text(reply, opts) if opts.content_pieces else ""
    if opts.content_pieces:  # the "concatenated" reading of notes §9.2: each content is a delta
        contents = cut_text(whole, 2 * opts.chunks, opts.awkward_splits)
    elif reply.raw_content is not None:
        contents = prefixes(cut_text(reply.raw_content, 2 * opts.chunks, opts.awkward_splits))
    elif opts.shape == "cumulative_details":
        contents = details_snapshots(reply, opts)
    else:
        contents = think_snapshots(reply, opts)
    events = [dumps({"content": s}, opts.ensure_ascii) for s in contents]
    if opts.send_usage:
        events.append(dumps({"usage": usage}, opts.ensure_ascii))
    done: dict[str, Any] = {"done": True}
    if opts.done_with_content:
        last = whole if opts.content_pieces else contents[-1] if contents else ""
        done.update(content=last, title=reply.title or opts.title)
    events.append(dumps(done, opts.ensure_ascii))
    return events


def delta_events(reply: Reply, opts: RenderOptions, usage: dict[str, Any]) -> list[str]:
    """OpenAI chunks: tags inside ``delta.content`` or ``reasoning_content``."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if reply.raw_content is not None:
        deltas += [{"content": p} for p in cut_text(reply.raw_content, 2 * opts.chunks, True)]
    elif opts.shape == "delta_tags":
        raw = think_text(reply, opts, "<think>")
        deltas += [{"content": p} for p in cut_text(raw, 2 * opts.chunks, True)]
    else:
        deltas += [{"reasoning_content": p} for p in split_even(reply.reasoning, opts.chunks)]
        leaked = {"close": "</think>\n\n", "block": f"<think>{reply.reasoning}</think>\n\n"}.get(opts.leak_think or "", "")
        deltas += [{"content": p} for p in split_even(leaked + reply.answer, opts.chunks)]
    chunks = [completion_chunk(cid, created, opts.model, d) for d in deltas]
    chunks.append(completion_chunk(cid, created, opts.model, {}, reply.finish_reason or "stop"))
    if opts.send_usage:
        chunks.append(usage_chunk(cid, created, opts.model, usage))
    return [*(dumps(c, opts.ensure_ascii) for c in chunks), "[DONE]"]


def json_completion(reply: Reply, opts: RenderOptions, usage: dict[str, Any]) -> dict[str, Any]:
    """Non-streamed ``chat.completion`` with ``<think duration="N">`` markup."""
    if reply.raw_content is not None:
        content = reply.raw_content
    elif opts.shape == "json_missing_open":
        content = think_text(reply, opts, "")
    else:
        content = think_text(reply, opts, f'<think duration="{opts.duration}">')
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": opts.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": reply.finish_reason or "stop",
            }
        ],
        "usage": usage,
    }


def long_reply(n_words: int) -> Reply:
    """A reply long enough to be cut into ``n_words`` pieces per part."""
    words = [f"thought{i}" for i in range(n_words)]
    lines = [" ".join(words[i : i + 8]) for i in range(0, len(words), 8)]
    answer = " ".join(f"word{i}" for i in range(n_words))
    return Reply(reasoning="\n".join(lines), answer=answer)


# ---------------------------------------------------------------------------
# Emulator
# ---------------------------------------------------------------------------


@dataclass
class _SigninFailure:
    status: int
    body: Any
    headers: dict[str, str]
    remaining: int | None  # None = fail forever


class K2ThinkEmulator(EmulatorBase):
    """K2Think / Open WebUI upstream on loopback. See module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        #: upstream model ids; others get 400 {"detail":"Model not found"}
        self.models: set[str] = {DEFAULT_MODEL}
        #: HS256 secret for minted JWTs
        self.jwt_secret = "k2think-emulator-hs256-secret-key-0123456789"
        #: treat unknown (unregistered, unsigned) tokens as valid
        self.accept_any_token = False
        #: emulate the Aliyun WAF: 405 HTML when the Cookie lacks token=
        self.waf_require_cookie = False
        self.waf_blocks = 0
        #: Retry-After seconds for "rate_limited" tokens
        self.retry_after = 30
        #: how chat_id/id/session_id in a token-mode body are treated:
        #: "task" (all three -> {"status":true,"task_id":…}), "reject" (chat_id -> 400), "ignore"
        self.session_ids_mode = "task"
        #: reply script
        self.reply = Reply(reasoning=DEFAULT_REASONING, answer=DEFAULT_ANSWER)
        self.responder: ReplyFactory | None = None
        #: output shape; None = per endpoint (token: delta_tags, guest: cumulative_details)
        self.shape: str | None = None
        self.stream_chunks = 4
        self.answer_tags = False
        self.duration = 2
        #: cut cumulative snapshots inside tags too (delta_tags always does)
        self.awkward_splits = False
        self.send_usage = True
        self.done_with_content = True
        self.title = "Greeting"
        self.ensure_ascii = False
        #: False: events are ``data:`` lines with no blank line between them (notes §2.2: one event a line)
        self.blank_lines = True
        #: cumulative shapes send each ``content`` as a piece of the text (notes §9.2 "concatenated");
        #: ``done`` then carries the whole text (with ``done_with_content``)
        self.content_pieces = False
        #: delta_reasoning: the thinking tags leak into ``content`` too; "close" (a stray ``</think>``)
        #: or "block" (``<think>reasoning</think>`` again, as the official API's clients expect)
        self.leak_think: str | None = None
        #: guest access: one of GUEST_AUTH_MODES; refusals are 401 (token, bearer) or 403 (handshake)
        self.guest_auth = "none"
        self.guest_page_visits = 0
        self._guest_cookies: set[str] = set()
        self._guest_tokens: set[str] = set()
        self._guest_conversations: set[str] = set()
        #: sign-in
        self.accounts: dict[str, str] = {}
        self.signin_token_in = "both"  # "json" | "cookie" | "both"
        #: seconds until sign-in tokens expire (exp / expires_at)
        self.token_lifetime = 3600
        self.signin_attempts: dict[str, int] = {}
        self.signin_successes: dict[str, int] = {}
        self.issued_tokens: dict[str, list[str]] = {}
        self._token_states: dict[str, str] = {}
        self._token_owner: dict[str, str] = {}
        self._account_states: dict[str, str] = {}
        self._signin_failures: dict[str, _SigninFailure] = {}

    # -- app -------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(CHAT_PATH, self.guard(self._handle_chat))
        app.router.add_post(GUEST_CHAT_PATH, self.guard(self._handle_guest_chat))
        app.router.add_get(GUEST_PAGE_PATH, self.guard(self._handle_guest_page))
        app.router.add_post(GUEST_TOKEN_PATH, self.guard(self._handle_guest_token))
        app.router.add_post(GUEST_NEW_CHAT_PATH, self.guard(self._handle_guest_new_chat))
        app.router.add_post(SIGNIN_PATH, self.guard(self._handle_signin))
        app.router.add_get(MODELS_PATH, self.guard(self._handle_models))
        return app

    def default_error_body(self, status: int) -> Any:
        known = {401: UNAUTHORIZED, 400: MODEL_NOT_FOUND, 404: {"detail": NOT_FOUND_DETAIL}}
        for state_status, body in STATE_ERRORS.values():
            known.setdefault(state_status, body)
        return known.get(status, {"detail": f"HTTP {status}"})

    # -- tokens ----------------------------------------------------------------

    def mint_token(
        self, exp_in: float = 3600, state: str = "valid", user_id: str | None = None
    ) -> str:
        """Mint an HS256 JWT ``{"id", "exp"}`` (negative exp_in = expired)."""
        payload = {"id": user_id or str(uuid.uuid4()), "exp": int(time.time() + exp_in)}
        token = jwt.encode(payload, self.jwt_secret, algorithm="HS256")
        self.set_token_state(token, state)
        return token

    def set_token_state(self, token: str, state: str) -> None:
        """Register any string as a token with a state (see TOKEN_STATES)."""
        if state not in TOKEN_STATES:
            raise ValueError(f"unknown token state {state!r}; expected one of {TOKEN_STATES}")
        with self._lock:
            self._token_states[token] = state

    def revoke(self, token: str) -> None:
        self.set_token_state(token, "revoked")

    def token_state(self, token: str) -> str | None:
        with self._lock:
            return self._token_states.get(token)

    def set_account_state(self, email: str, state: str) -> None:
        """Apply a state to all tokens issued to ``email``, now and at future sign-ins."""
        email = email.lower()
        with self._lock:
            self._account_states[email] = state
            tokens = list(self.issued_tokens.get(email, []))
        for token in tokens:
            self.set_token_state(token, state)

    def token_expired(self, token: str) -> bool:
        try:
            claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
        except jwt.InvalidTokenError:
            return False
        exp = claims.get("exp")
        return isinstance(exp, int | float) and exp < time.time()

    def _signature_ok(self, token: str) -> bool:
        try:
            jwt.decode(token, self.jwt_secret, algorithms=["HS256"])
        except jwt.InvalidTokenError:
            return False
        return True

    @staticmethod
    def extract_token(request: web.Request) -> str | None:
        """Bearer header first, then the ``token`` cookie (Open WebUI order)."""
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return request.cookies.get("token") or None

    def check_token(self, token: str | None) -> web.Response | None:
        """None when the token may chat, else the error response to send."""
        if not token:
            return self.error_response(401, NOT_AUTHENTICATED)
        if self.token_expired(token):
            return self.error_response(401, UNAUTHORIZED)
        state = self.token_state(token)
        if state is None:
            if not (self.accept_any_token or self._signature_ok(token)):
                return self.error_response(401, UNAUTHORIZED)
            state = "valid"
        if state == "valid":
            return None
        status, body = STATE_ERRORS[state]
        headers = {"Retry-After": str(self.retry_after)} if state == "rate_limited" else None
        return self.error_response(status, body, headers)

    def account_for(self, token: str) -> str | None:
        """The (lower-cased) email a sign-in token was issued to."""
        with self._lock:
            return self._token_owner.get(token)

    @property
    def used_tokens(self) -> list[str | None]:
        """Tokens presented to the token-mode chat endpoint, in order."""
        return [r.token for r in self.requests_to(CHAT_PATH)]

    # -- recorded-request helpers ------------------------------------------------

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path in (CHAT_PATH, GUEST_CHAT_PATH)]

    # -- handlers ----------------------------------------------------------------

    def _waf_block(self, request: web.Request) -> web.Response | None:
        if self.waf_require_cookie and "token" not in request.cookies:
            with self._lock:
                self.waf_blocks += 1
            return self.error_response(405, WAF_PAGE)
        return None

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        recorded.token = self.extract_token(request)
        await self.wait_first_byte()
        failure = self.take_failure()
        if failure is not None:
            return self.failure_response(failure)
        blocked = self._waf_block(request)
        if blocked is not None:
            return blocked
        denied = self.check_token(recorded.token)
        if denied is not None:
            return denied
        return await self._complete(request, recorded, guest=False)

    async def _handle_guest_chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        await self.wait_first_byte()
        failure = self.take_failure()
        if failure is not None:
            return self.failure_response(failure)
        refused = self._guest_refusal(request, recorded)
        if refused is not None:
            return refused
        return await self._complete(request, recorded, guest=True)

    # -- guest access ----------------------------------------------------------

    def _guest_refusal(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse | None:
        mode = self.guest_auth
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        bearer = value.strip() if scheme.lower() == "bearer" else None
        if mode == "bearer" and not bearer:
            return self.error_response(401, {"detail": "Not authenticated"})
        if mode == "token" and bearer not in self._guest_tokens:
            return self.error_response(401, UNAUTHORIZED)
        if mode == "handshake":
            body = recorded.json if isinstance(recorded.json, dict) else {}
            with self._lock:
                known = request.cookies.get("guest_session") in self._guest_cookies
                conversation = body.get("conversation_id")
                fresh = isinstance(conversation, str) and conversation in self._guest_conversations
                if fresh:
                    self._guest_conversations.discard(conversation)  # one chat per guest conversation
            if not (known and fresh and request.cookies.get("guest_conversation_count")):
                return self.error_response(403, {"detail": "Guest session required"})
        return None

    async def _handle_guest_page(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        cookie = uuid.uuid4().hex
        with self._lock:
            self.guest_page_visits += 1
            self._guest_cookies.add(cookie)
        response = web.Response(text="<!doctype html><title>K2 Think</title>", content_type="text/html")
        response.set_cookie("guest_session", cookie, httponly=True)
        return response

    async def _handle_guest_token(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        if self.guest_auth != "token":
            return self.error_response(404, {"detail": NOT_FOUND_DETAIL})
        with self._lock:
            if request.cookies.get("guest_session") not in self._guest_cookies:
                return self.error_response(401, {"detail": "Not authenticated"})
            token = "guest." + uuid.uuid4().hex
            self._guest_tokens.add(token)
        return web.json_response({"token": token, "token_type": "Bearer"})

    async def _handle_guest_new_chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        if self.guest_auth != "handshake":
            return self.error_response(404, {"detail": NOT_FOUND_DETAIL})
        chat = recorded.json.get("chat") if isinstance(recorded.json, dict) else None
        if not isinstance(chat, dict) or not isinstance(chat.get("messages"), list):
            return self.error_response(422, {"detail": [{"type": "missing", "loc": ["body", "chat"]}]})
        with self._lock:
            if request.cookies.get("guest_session") not in self._guest_cookies:
                return self.error_response(403, {"detail": "Guest session required"})
            conversation = str(uuid.uuid4())
            self._guest_conversations.add(conversation)
        response = web.json_response({"id": conversation, "title": chat.get("title", ""), "chat": chat})
        response.set_cookie("guest_chat", conversation[:8])
        return response

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        recorded.token = self.extract_token(request)
        blocked = self._waf_block(request)
        if blocked is not None:
            return blocked
        denied = self.check_token(recorded.token)
        if denied is not None:
            return denied
        created = int(time.time())
        data = [
            {
                "id": model,
                "name": model,
                "object": "model",
                "created": created,
                "owned_by": "MBZUAI",
                "connection_type": "external",
                "status": "active",
            }
            for model in sorted(self.models)
        ]
        return web.json_response({"data": data}, dumps=dumps)

    async def _complete(
        self, request: web.Request, recorded: RecordedRequest, guest: bool
    ) -> web.StreamResponse:
        """Validate the body, then answer in the selected shape."""
        body = recorded.json
        if not isinstance(body, dict):
            return self.error_response(
                422, {"detail": [{"type": "json_invalid", "msg": "JSON decode error"}]}
            )
        if body.get("model") not in self.models:
            return self.error_response(400, MODEL_NOT_FOUND)
        if not guest:
            diverted = self._session_ids_response(body)
            if diverted is not None:
                return diverted
        shape = self._resolve_shape(request, guest, bool(body.get("stream")))
        if shape not in SHAPES:
            return self.error_response(400, {"detail": f"emulator: unknown shape {shape!r}"})
        reply = self._make_reply(body)
        opts = self._render_options(shape, str(body["model"]))
        usage = reply.usage or default_usage(body, reply.reasoning, reply.answer)
        if shape.startswith("json"):
            payload = dumps(json_completion(reply, opts, usage), opts.ensure_ascii).encode()
            return await self.send_body(request, payload)
        render = cumulative_events if shape.startswith("cumulative") else delta_events
        settings = self.stream_settings()
        ending = settings.line_ending
        events = [encode_sse(e, ending) if self.blank_lines else f"data: {e}{ending}".encode()
                  for e in render(reply, opts, usage)]
        return await self.send_stream(request, events, settings)

    def _session_ids_response(self, body: dict[str, Any]) -> web.Response | None:
        """Open WebUI diverts id-carrying requests to a background task."""
        mode = self.session_ids_mode
        if mode == "reject" and body.get("chat_id"):
            return self.error_response(400, {"detail": NOT_FOUND_DETAIL})
        if mode == "task" and all(body.get(k) for k in SESSION_ID_FIELDS):
            return web.json_response({"status": True, "task_id": str(uuid.uuid4())})
        return None

    def _resolve_shape(self, request: web.Request, guest: bool, stream: bool) -> str:
        shape = request.headers.get("x-emu-shape") or self.shape
        if shape is None:
            shape = "cumulative_details" if guest else "delta_tags"
        if not stream and shape in SHAPES and not shape.startswith("json"):
            shape = "json"
        return shape

    def _make_reply(self, body: dict[str, Any]) -> Reply:
        responder = self.responder
        if responder is None:
            return self.reply
        made = responder(body)
        return Reply(answer=made) if isinstance(made, str) else made

    def _render_options(self, shape: str, model: str) -> RenderOptions:
        return RenderOptions(
            shape=shape,
            chunks=max(1, self.stream_chunks),
            answer_tags=self.answer_tags,
            duration=self.duration,
            awkward_splits=self.awkward_splits,
            send_usage=self.send_usage,
            done_with_content=self.done_with_content,
            ensure_ascii=self.ensure_ascii,
            title=self.title,
            model=model,
            content_pieces=self.content_pieces,
            leak_think=self.leak_think,
        )

    # -- streaming helpers for tests ------------------------------------------------

    def slow_stream(self, n_chunks: int, delay: float, keep_reply: bool = False) -> None:
        """Make streams last about ``2 * n_chunks * delay`` seconds.

        Unless ``keep_reply``, the reply is replaced by a generated one long
        enough to be cut into ``n_chunks`` pieces per part.
        """
        self.stream_chunks = n_chunks
        self.chunk_delay = delay
        if not keep_reply:
            self.reply = long_reply(n_chunks)

    # -- sign-in -------------------------------------------------------------------

    def add_account(self, email: str, password: str) -> None:
        with self._lock:
            self.accounts = {**self.accounts, email: password}

    def fail_signin(
        self,
        email: str,
        status: int = 500,
        times: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Fail sign-ins for ``email``: the first ``times`` attempts, or always."""
        default = (
            {"detail": "Internal Server Error"} if status >= 500 else {"detail": f"HTTP {status}"}
        )
        failure = _SigninFailure(
            status, default if body is None else body, dict(headers or {}), times
        )
        with self._lock:
            self._signin_failures[email.lower()] = failure

    def clear_signin_failures(self, email: str | None = None) -> None:
        with self._lock:
            if email is None:
                self._signin_failures.clear()
            else:
                self._signin_failures.pop(email.lower(), None)

    def _take_signin_failure(self, email: str) -> _SigninFailure | None:
        with self._lock:
            self.signin_attempts[email] = self.signin_attempts.get(email, 0) + 1
            failure = self._signin_failures.get(email)
            if failure is None:
                return None
            if failure.remaining is not None:
                if failure.remaining <= 0:
                    return None
                failure.remaining -= 1
            return failure

    def _password_ok(self, email: str, password: str) -> bool:
        accounts = {k.lower(): v for k, v in self.accounts.items()}
        return email in accounts and accounts[email] == password

    def _issue_token(self, email: str) -> tuple[str, int, str]:
        """Mint and register a sign-in token; returns (jwt, exp, user id)."""
        user_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"k2think:{email}"))
        exp = int(time.time() + self.token_lifetime)
        token = jwt.encode({"id": user_id, "exp": exp}, self.jwt_secret, algorithm="HS256")
        with self._lock:
            state = self._account_states.get(email, "valid")
            self._token_states[token] = state
            self._token_owner[token] = email
            self.issued_tokens.setdefault(email, []).append(token)
            self.signin_successes[email] = self.signin_successes.get(email, 0) + 1
        return token, exp, user_id

    async def _handle_signin(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        body = recorded.json
        if not (
            isinstance(body, dict)
            and isinstance(body.get("email"), str)
            and isinstance(body.get("password"), str)
        ):
            missing = [{"type": "missing", "loc": ["body", "email"], "msg": "Field required"}]
            return self.error_response(422, {"detail": missing})
        email = body["email"].lower()
        failure = self._take_signin_failure(email)
        if failure is not None:
            return self.error_response(failure.status, failure.body, failure.headers)
        if not self._password_ok(email, body["password"]):
            return self.error_response(400, {"detail": BAD_CREDENTIALS_DETAIL})
        token, exp, user_id = self._issue_token(email)
        return self._signin_response(token, exp, user_id, email)

    def _signin_response(self, token: str, exp: int, user_id: str, email: str) -> web.Response:
        mode = self.signin_token_in
        payload: dict[str, Any] = {
            "id": user_id,
            "email": email,
            "name": email.split("@")[0],
            "role": "user",
            "profile_image_url": "/user.png",
            "token_type": "Bearer",
            "expires_at": exp,
            "permissions": {"chat": {"file_upload": True}},
        }
        if mode in ("json", "both"):
            payload = {"token": token, **payload}
        resp = web.json_response(payload, dumps=dumps)
        if mode in ("cookie", "both"):
            resp.set_cookie("token", token, httponly=True, path="/", samesite="Lax")
        return resp


# ---------------------------------------------------------------------------
# Standalone entry point (benchmarks, manual poking)
# ---------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="K2Think upstream emulator (accepts any token)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--shape", choices=SHAPES, default=None)
    parser.add_argument("--chunks", type=int, default=None, help="pieces per reply part")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between events")
    parser.add_argument("--record", action="store_true", help="keep a request log in memory")
    parser.add_argument("--uvloop", action="store_true", help="serve on uvloop if installed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve in the foreground until interrupted."""
    args = _parse_args(argv)
    emu = K2ThinkEmulator(args.host, args.port)
    emu.accept_any_token = True
    emu.record_requests = args.record
    emu.shape = args.shape
    emu.chunk_delay = args.delay
    if args.chunks:
        emu.slow_stream(args.chunks, args.delay)
    if args.uvloop:
        use_uvloop(emu)
    base = emu.start()
    print(f"k2think emulator listening on {base}", flush=True)
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()


if __name__ == "__main__":
    main()
