"""What K2Think's guest endpoint asks of a client, learnt the first time it refuses a plain request.

The public proxies disagree (notes §1.3 and open question 9): no authentication at all, any
bearer token, a guest JWT from `POST /api/guest/token` after `GET /guest`, or a cookie handshake
(`GET /guest`, then `POST /api/v1/chats/guest/new` for a `conversation_id` to send with the chat,
and a `guest_conversation_count` cookie). Guest requests go out plain until one is refused; then
one handshake tries every step, and what answered becomes the `GuestPass` every later guest
request carries (renewed after `PASS_LIFETIME`, or dropped when it is refused in turn; when one
is refused before any chat was answered with it, the endpoint refuses guests, and no handshake is tried for `HANDSHAKE_PAUSE`). A step
that fails is skipped: the pass holds what worked, and a bearer of its own when no step gave one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from chatbridge.core.budget import FIRST_CONTENT_DEADLINE, remaining
from chatbridge.core.secrets import register_secret
from chatbridge.providers.http import HttpSettings, create_session
from chatbridge.providers.k2think.payload import K2ThinkEndpoints, guest_headers

log = logging.getLogger("chatbridge.k2think")

PASS_LIFETIME = 55 * 60.0  # seconds: the guest JWT's cache in the one proxy that fetches one
HANDSHAKE_PAUSE = 300.0  # seconds without a handshake after a pass was refused before serving a chat
_MAX_BODY = 1 << 20  # bytes read of any handshake answer


@dataclass(slots=True)
class GuestPass:
    cookies: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # a guest JWT from /api/guest/token
    conversations: bool = False  # /api/v1/chats/guest/new answered: each chat gets a conversation of its own
    served: bool = False  # a chat was answered with it (refused before that: the handshake found nothing that helps)
    made_at: float = field(default_factory=time.monotonic)

    @property
    def stale(self) -> bool:
        return time.monotonic() - self.made_at > PASS_LIFETIME


    def headers(self, endpoints: K2ThinkEndpoints) -> dict[str, str]:
        headers = guest_headers(endpoints)
        headers["Cookie"] = cookie_header({**self.cookies, "guest_conversation_count": "1"})
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        elif not self.conversations:  # the proxy that sends a random bearer: the endpoint wanted one, any one
            headers["Authorization"] = f"Bearer guest-{secrets.token_hex(16)}"
        return headers

    @property
    def learnt(self) -> str:
        """What the handshake found, for the log."""
        found = [what for what, got in (("cookies", self.cookies), ("a guest token", self.token),
                                        ("guest conversations", self.conversations)) if got]
        return ", ".join(found) or "nothing (a bearer of its own will be sent)"


class GuestHandshake:
    """Runs the handshake on a session without a cookie jar (cookies are sent only as the pass says)."""

    def __init__(self, endpoints: K2ThinkEndpoints, http: HttpSettings, model: str) -> None:
        self.endpoints = endpoints
        self.http = http
        self.model = model

    async def new_pass(self) -> GuestPass:
        guest = GuestPass()
        async with create_session(self.http, cookies=False) as session:
            page = await self._call(session, "GET", "/guest", None, guest)
            if page is None:
                log.info("k2think guest handshake: GET /guest did not answer")
            token = await self._call(session, "POST", "/api/guest/token", {}, guest)
            if isinstance(token, dict) and isinstance(token.get("token"), str) and token["token"]:
                guest.token = token["token"]
                register_secret(guest.token)
            guest.conversations = await self._conversation(session, guest) is not None
        return guest

    async def conversation(self, guest: GuestPass) -> str | None:
        """A new guest conversation's id, for one chat (None: it could not be had; the chat goes without)."""
        async with create_session(self.http, cookies=False) as session:
            return await self._conversation(session, guest)

    async def _conversation(self, session: aiohttp.ClientSession, guest: GuestPass) -> str | None:
        answer = await self._call(session, "POST", "/api/v1/chats/guest/new", _chat_object(self.model), guest)
        chat_id = answer.get("id") if isinstance(answer, dict) else None
        return chat_id if isinstance(chat_id, str) and 0 < len(chat_id) <= 200 else None

    async def _call(self, session: aiohttp.ClientSession, method: str, path: str, body: Any,
                    guest: GuestPass) -> Any:
        """One step: its JSON answer (or "" for any other 2xx body), None when it failed; cookies it set are kept."""
        headers = guest_headers(self.endpoints)
        if guest.cookies:
            headers["Cookie"] = cookie_header(guest.cookies)
        if guest.token is not None:
            headers["Authorization"] = f"Bearer {guest.token}"
        try:
            async with asyncio.timeout(self._time_left()):
                async with session.request(method, self.endpoints.origin + path, headers=headers,
                                           data=None if body is None else orjson.dumps(body),
                                           allow_redirects=False) as response:
                    for name, morsel in response.cookies.items():
                        if morsel.value and len(guest.cookies) < 20:
                            guest.cookies[name] = morsel.value
                    if not 200 <= response.status < 300:
                        return None
                    raw = b""
                    async for chunk in response.content.iter_chunked(1 << 16):
                        raw += chunk
                        if len(raw) > _MAX_BODY:
                            return None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return ""

    def _time_left(self) -> float:
        """Each step within REQUEST_TIMEOUT and what is left of the request's own budget."""
        deadline = FIRST_CONTENT_DEADLINE.get()
        budget = self.http.request_timeout
        return max(0.1, min(budget, remaining(deadline))) if deadline is not None else budget


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def _chat_object(model: str) -> dict[str, Any]:
    """The Open WebUI chat object guest chats are created from (notes §1.6), with an empty first message."""
    message_id = str(uuid.uuid4())
    now = time.time()
    message = {"id": message_id, "parentId": None, "childrenIds": [], "role": "user", "content": "",
               "timestamp": int(now), "models": [model]}
    return {"chat": {"id": "", "title": "New Chat", "models": [model], "params": {},
                     "history": {"messages": {message_id: message}, "currentId": message_id},
                     "messages": [message], "tags": [], "timestamp": int(now * 1000)}}
