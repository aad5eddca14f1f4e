"""Conversations kept upstream per OpenAI `user`: a follow-up sends only its new turn into the same chat.

A stateful upstream (a web chat) keeps the conversation on its side, in one chat of one
account. With `user` set, the gateway remembers, per (client, `user`, model), the upstream chat,
its latest assistant message, the account that owns it, and a fingerprint of the conversation
so far as the client will send it back (its messages, then the answer exactly as streamed).

A request whose messages are that conversation plus new user turns continues the chat: only
the new turns go upstream (`ChatRequest.conversation` names the chat and the message to
continue from). Anything else starts a new chat with the whole history: an edited or
truncated history, another model (another key), an expired or evicted session, another
account (the owner is unavailable: failover), or a request without `user` (stateless).

Sessions live in a state-store namespace with a TTL (`SESSION_CACHE_TTL`, renewed by every
answer) and a bound on their number (`MAX_SESSION_SIZE`; the least recently used go first), so
with the embedded store they survive a restart. Only the ids and a hash are stored, never text.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from chatbridge.core.credentials import Credential
from chatbridge.core.types import (
    ChatRequest,
    ConversationRef,
    DocumentPart,
    Event,
    Finish,
    ImagePart,
    Message,
    Route,
    TextDelta,
    TextPart,
    ToolCallDelta,
)
from chatbridge.state import Namespace

log = logging.getLogger("chatbridge.sessions")

_NEW_TURN_ROLES = frozenset({"user", "system", "developer"})


@dataclass(frozen=True, slots=True)
class SessionSettings:
    ttl: float = 3600.0  # SESSION_CACHE_TTL: seconds a session lives after its last answer
    max_sessions: int = 1000  # MAX_SESSION_SIZE: sessions kept; the least recently used go first


@dataclass(frozen=True, slots=True)
class Session:
    """What is stored per (client, user, model): ids, the owning account, a fingerprint; no text."""

    chat_id: str
    message_id: str
    account: str | None
    fingerprint: str
    used: float

    def to_json(self) -> dict[str, Any]:
        return {"chat_id": self.chat_id, "message_id": self.message_id, "account": self.account,
                "fingerprint": self.fingerprint, "used": self.used}

    @classmethod
    def from_json(cls, value: object) -> Session | None:
        """A stored session, or None for anything that is not one (an older format, a damaged file)."""
        if not isinstance(value, dict):
            return None
        chat, message, fingerprint = value.get("chat_id"), value.get("message_id"), value.get("fingerprint")
        account, used = value.get("account"), value.get("used")
        if not (isinstance(chat, str) and isinstance(message, str) and isinstance(fingerprint, str)):
            return None
        if account is not None and not isinstance(account, str):
            return None
        return cls(chat, message, account, fingerprint, float(used) if isinstance(used, int | float) else 0.0)


def session_key(client: str | None, user: str, model: str) -> str:
    """The store key of a session: a hash, so a megabyte `user` or odd characters cost nothing."""
    material = "\x00".join((client or "", user, model)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(material).hexdigest()[:40]


# --- fingerprints ------------------------------------------------------------------------------


class ConversationHash:
    """A running hash of a conversation as a client sends it back.

    Whitespace is left out (clients trim and re-wrap), reasoning too (few send it back), so an
    answer hashed while it streams matches the same answer echoed as the next request's
    assistant message.
    """

    __slots__ = ("_hash",)

    def __init__(self, messages: Sequence[Message] = ()) -> None:
        self._hash = hashlib.sha256(b"chatbridge-conversation-1")
        for message in messages:
            self.add(message)

    def add(self, message: Message) -> None:
        self.start(message.role)
        content = message.content
        if isinstance(content, list):
            for part in content:
                if isinstance(part, ImagePart):
                    self._hash.update(b"\x02" + hashlib.sha256(part.url.encode("utf-8", "surrogatepass")).digest())
                elif isinstance(part, DocumentPart):
                    self._hash.update(b"\x05" + hashlib.sha256(part.data.encode("utf-8", "surrogatepass")).digest())
                elif isinstance(part, TextPart):
                    self.text(part.text)
                # reasoning parts are left out, like `reasoning_content`: clients echo them back differently
        elif content:
            self.text(content)
        for call in message.tool_calls:
            self._hash.update(b"\x03")
            self.text(call.name + "\x1f" + call.arguments)
        if message.tool_call_id:
            self._hash.update(b"\x04")
            self.text(message.tool_call_id)

    def start(self, role: str) -> None:
        role = "system" if role == "developer" else role
        self._hash.update(b"\x01" + role.encode())

    def text(self, text: str) -> None:
        if text:
            self._hash.update("".join(text.split()).encode("utf-8", "surrogatepass"))

    def copy(self) -> ConversationHash:
        twin = ConversationHash.__new__(ConversationHash)
        twin._hash = self._hash.copy()
        return twin

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def fingerprint(messages: Sequence[Message]) -> str:
    return ConversationHash(messages).hexdigest()


def continuation_start(messages: Sequence[Message], session: Session) -> int | None:
    """Where the new turns begin if `messages` extend the stored conversation, else None.

    They extend it when everything up to their last assistant message is the conversation the
    session fingerprinted, and what follows are new user (or system) turns.
    """
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=None)
    if last is None or last + 1 >= len(messages):
        return None
    if any(m.role not in _NEW_TURN_ROLES for m in messages[last + 1 :]):
        return None
    return last + 1 if fingerprint(messages[: last + 1]) == session.fingerprint else None


# --- the store ---------------------------------------------------------------------------------


class SessionStore:
    """Sessions in a state-store namespace, bounded by TTL and by number (least recently used first)."""

    def __init__(self, namespace: Namespace, settings: SessionSettings, clock: Callable[[], float] = time.time) -> None:
        self.namespace = namespace
        self.settings = settings
        self.clock = clock
        self._count: int | None = None  # sessions stored, as far as this process knows (an upper bound)

    async def get(self, key: str) -> Session | None:
        return Session.from_json(await self.namespace.get(key))

    async def put(self, key: str, session: Session, *, new: bool) -> None:
        """Store `session` (renewing its TTL); `new` when the key held none, so the bound may be due."""
        await self.namespace.set(key, session.to_json(), ttl=self.settings.ttl)
        if self._count is None:
            self._count = len(await self.namespace.keys())
        elif new:
            self._count += 1
        if self._count > self.settings.max_sessions:
            await self._evict()

    async def _evict(self) -> None:
        """Drop the least recently used sessions: a tenth of the bound at once, so this runs seldom."""
        keys = await self.namespace.keys()
        limit = self.settings.max_sessions
        if len(keys) <= limit:
            self._count = len(keys)
            return
        aged: list[tuple[float, str]] = []
        for key in keys:
            session = Session.from_json(await self.namespace.get(key))
            aged.append((session.used if session is not None else 0.0, key))
        aged.sort()
        excess = len(keys) - limit + max(0, limit // 10 - 1)
        for _, key in aged[: max(1, excess)]:
            await self.namespace.delete(key)
        self._count = len(keys) - max(1, excess)
        log.info("sessions: %d least recently used dropped (MAX_SESSION_SIZE=%d)", max(1, excess), limit)

    async def delete(self, key: str) -> None:
        await self.namespace.delete(key)

    async def count(self) -> int:
        """Sessions stored now (for the `chatbridge_sessions` gauge, read at scrape time)."""
        self._count = len(await self.namespace.keys())
        return self._count


# --- the plan ----------------------------------------------------------------------------------


class SessionPlanner:
    """A pipeline planner for a stateful provider: per request, its `SessionPlan`."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def __call__(self, request: ChatRequest, route: Route, provider: object) -> SessionPlan:
        if not request.user:  # stateless: a new chat every time
            return SessionPlan(request, None, None, None, self.store)
        key = session_key(request.client, request.user, route.public_id)
        session = await self.store.get(key)
        start = continuation_start(request.messages, session) if session is not None else None
        return SessionPlan(request, key, session, start, self.store, had_session=session is not None)


class SessionPlan:
    """One request's plan: continue the stored chat on its owning account, or start a new one.

    Continuation is only for the first attempt on the owning account: any other credential,
    or an attempt after a failure, gets the whole history as a new chat.
    """

    __slots__ = ("_had_session", "_request", "_session", "_start", "_store", "key")

    def __init__(self, request: ChatRequest, key: str | None, session: Session | None, start: int | None,
                 store: SessionStore, *, had_session: bool = False) -> None:
        self._request = request
        self.key = key
        self._session = session if start is not None else None
        self._start = start
        self._store = store
        self._had_session = had_session

    @property
    def prefer(self) -> str | None:
        return self._session.account if self._session is not None else None

    @property
    def continues(self) -> bool:
        return self._session is not None

    def request_for(self, credential: Credential | None, *, failover: bool) -> ChatRequest:
        session = self._session
        if session is None or failover or (credential.id if credential is not None else None) != session.account:
            return self._request
        assert self._start is not None
        return replace(self._request, messages=self._request.messages[self._start :],
                       conversation=ConversationRef(session.chat_id, session.message_id))

    def watch(self, credential: Credential | None) -> SessionRecorder | None:
        if self.key is None:
            return None
        return SessionRecorder(self, credential)

    async def remember(self, credential: Credential | None, conversation: ConversationRef, answer: ConversationHash) -> None:
        assert self.key is not None
        session = Session(conversation.chat_id, conversation.message_id, credential.id if credential else None,
                          answer.hexdigest(), self._store.clock())
        await self._store.put(self.key, session, new=not self._had_session)

    @property
    def messages(self) -> list[Message]:
        return self._request.messages


class SessionRecorder:
    """Hashes the answer as the client gets it; once it has ended well, stores the session."""

    __slots__ = ("_credential", "_finished", "_hash", "_plan", "_tools")

    def __init__(self, plan: SessionPlan, credential: Credential | None) -> None:
        self._plan = plan
        self._credential = credential
        self._hash = ConversationHash(plan.messages)
        self._hash.start("assistant")
        self._finished = False
        self._tools = False

    def feed(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self._hash.text(event.text)
        elif isinstance(event, Finish):
            self._finished = True
        elif isinstance(event, ToolCallDelta):
            self._tools = True

    async def complete(self, conversation: ConversationRef | None) -> None:
        if conversation is None or not self._finished or self._tools:
            return  # nothing to continue from (or not an answer a client echoes as text)
        await self._plan.remember(self._credential, conversation, self._hash)
