"""Sessions: which follow-ups continue the upstream chat, what each attempt sends, and the store's bounds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from chatbridge.core.credentials import Credential
from chatbridge.core.secrets import Secret
from chatbridge.core.types import (
    ChatRequest,
    ConversationRef,
    Finish,
    ImagePart,
    Message,
    Route,
    TextDelta,
    TextPart,
    ToolCallDelta,
)
from chatbridge.features.sessions import (
    Session,
    SessionPlanner,
    SessionSettings,
    SessionStore,
    continuation_start,
    fingerprint,
    session_key,
)
from chatbridge.state import EmbeddedStore, MemoryStore

ROUTE = Route("kimi", "kimi", "kimi")
OWNER = Credential(id="acct-1", secret=Secret("access-token-0123456789"), provider="kimi")
OTHER = Credential(id="acct-2", secret=Secret("access-token-9876543210"), provider="kimi")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def user(text: str) -> Message:
    return Message(role="user", content=text)


def assistant(text: str) -> Message:
    return Message(role="assistant", content=text)


def chat(*messages: Message, who: str | None = "zhang_san_001", client: str | None = "client-a") -> ChatRequest:
    return ChatRequest(model="kimi", messages=list(messages), user=who, client=client)


async def answer(planner: SessionPlanner, request: ChatRequest, credential: Credential, reply: str,
                 ref: ConversationRef) -> tuple[Any, ChatRequest]:
    """One turn: plan, the request the first attempt sends, the answer as it streams, stored."""
    plan = await planner(request, ROUTE, None)
    sent = plan.request_for(credential, failover=False)
    recorder = plan.watch(credential)
    if recorder is not None:
        for piece in (reply[: len(reply) // 2], reply[len(reply) // 2 :]):
            recorder.feed(TextDelta(piece))
        recorder.feed(Finish("stop"))
        await recorder.complete(ref)
    return plan, sent


def planner(store: SessionStore | None = None) -> SessionPlanner:
    return SessionPlanner(store or SessionStore(MemoryStore().namespace("sessions"), SessionSettings()))


def test_three_turns_with_user_continue_one_chat_sending_only_the_new_turn() -> None:
    async def main() -> list[ChatRequest]:
        sessions = planner()
        first = chat(user("我叫张三，来自北京"))
        _, sent1 = await answer(sessions, first, OWNER, "你好，张三！", ConversationRef("chat-1", "a1"))
        second = chat(user("我叫张三，来自北京"), assistant("你好，张三！"), user("我刚才说我来自哪里？"))
        plan2, sent2 = await answer(sessions, second, OWNER, "你说你来自北京。", ConversationRef("chat-1", "a2"))
        assert plan2.prefer == "acct-1"
        third = chat(*second.messages, assistant("你说你来自北京。"), user("谢谢"))
        _, sent3 = await answer(sessions, third, OWNER, "不客气", ConversationRef("chat-1", "a3"))
        return [sent1, sent2, sent3]

    sent1, sent2, sent3 = run(main())
    assert sent1.conversation is None and len(sent1.messages) == 1
    assert sent2.conversation == ConversationRef("chat-1", "a1") and [m.text for m in sent2.messages] == ["我刚才说我来自哪里？"]
    assert sent3.conversation == ConversationRef("chat-1", "a2") and [m.text for m in sent3.messages] == ["谢谢"]


def test_whitespace_and_reasoning_the_client_changes_do_not_break_the_match() -> None:
    stored = Session("c", "m", "acct-1", fingerprint([user("hi"), assistant("Hello there!\n\nHow are you?")]), 0)
    echoed = [user(" hi "), Message(role="assistant", content="Hello there! How are you?", reasoning_content="x"),
              user("fine")]
    assert continuation_start(echoed, stored) == 2


def test_edited_or_truncated_history_or_no_new_turn_starts_anew() -> None:
    history = [Message(role="system", content="be brief"), user("hi"), assistant("Hello!")]
    stored = Session("c", "m", "acct-1", fingerprint(history), 0)
    assert continuation_start([*history, user("more")], stored) == 3
    assert continuation_start([history[0], user("hi!"), history[2], user("more")], stored) is None  # edited
    assert continuation_start([Message(role="system", content="be long"), *history[1:], user("x")], stored) is None
    assert continuation_start([user("hi"), assistant("Hello!"), user("more")], stored) is None  # system dropped
    assert continuation_start(history, stored) is None  # nothing new to send
    assert continuation_start([*history, Message(role="tool", content="r", tool_call_id="t")], stored) is None


def test_images_are_part_of_the_fingerprint() -> None:
    with_image = Message(role="user", content=[TextPart("look"), ImagePart("data:image/png;base64,AAAA")])
    other_image = Message(role="user", content=[TextPart("look"), ImagePart("data:image/png;base64,BBBB")])
    assert fingerprint([with_image]) != fingerprint([other_image])


def test_another_account_or_a_failover_gets_the_whole_history_as_a_new_chat() -> None:
    async def main() -> None:
        sessions = planner()
        await answer(sessions, chat(user("one")), OWNER, "two", ConversationRef("chat-1", "a1"))
        follow_up = chat(user("one"), assistant("two"), user("three"))
        plan = await sessions(follow_up, ROUTE, None)
        assert plan.continues and plan.prefer == "acct-1"
        assert plan.request_for(OWNER, failover=False).conversation == ConversationRef("chat-1", "a1")
        for sent in (plan.request_for(OTHER, failover=False), plan.request_for(OWNER, failover=True),
                     plan.request_for(None, failover=False)):
            assert sent.conversation is None and len(sent.messages) == 3

    run(main())


def test_without_user_every_request_is_stateless_and_nothing_is_stored() -> None:
    async def main() -> None:
        store = SessionStore(MemoryStore().namespace("sessions"), SessionSettings())
        sessions = planner(store)
        plan, sent = await answer(sessions, chat(user("one"), who=None), OWNER, "two", ConversationRef("c", "a"))
        assert plan.watch(OWNER) is None and sent.conversation is None
        second = await sessions(chat(user("one"), assistant("two"), user("three"), who=None), ROUTE, None)
        assert not second.continues
        assert await store.namespace.keys() == []

    run(main())


def test_sessions_are_kept_per_client_user_and_model() -> None:
    keys = {session_key("a", "u", "kimi"), session_key("b", "u", "kimi"), session_key("a", "v", "kimi"),
            session_key("a", "u", "kimi-thinking"), session_key(None, "u", "kimi")}
    assert len(keys) == 5
    assert len(session_key("a", "u" * 100_000, "kimi")) == 40


def test_an_answer_that_did_not_finish_or_called_tools_is_not_remembered() -> None:
    async def main() -> None:
        store = SessionStore(MemoryStore().namespace("sessions"), SessionSettings())
        sessions = planner(store)
        plan = await sessions(chat(user("one")), ROUTE, None)
        cut_off = plan.watch(OWNER)
        assert cut_off is not None
        cut_off.feed(TextDelta("partial"))
        await cut_off.complete(ConversationRef("c", "a"))
        tools = plan.watch(OWNER)
        assert tools is not None
        tools.feed(ToolCallDelta(0, "call_1", "f", "{}"))
        tools.feed(Finish("tool_calls"))
        await tools.complete(ConversationRef("c", "a"))
        assert await store.namespace.keys() == []

    run(main())


def test_sessions_expire_after_their_ttl() -> None:
    now = [1000.0]
    memory = MemoryStore(clock=lambda: now[0])

    async def main() -> None:
        store = SessionStore(memory.namespace("sessions"), SessionSettings(ttl=60), clock=lambda: now[0])
        sessions = planner(store)
        await answer(sessions, chat(user("one")), OWNER, "two", ConversationRef("c", "a"))
        follow_up = chat(user("one"), assistant("two"), user("three"))
        now[0] += 59
        assert (await sessions(follow_up, ROUTE, None)).continues
        now[0] += 2
        assert not (await sessions(follow_up, ROUTE, None)).continues

    run(main())


def test_the_least_recently_used_sessions_go_first_beyond_the_bound() -> None:
    now = [1000.0]

    async def main() -> list[str]:
        store = SessionStore(MemoryStore(clock=lambda: now[0]).namespace("sessions"), SessionSettings(max_sessions=20),
                             clock=lambda: now[0])
        sessions = planner(store)
        for n in range(21):
            now[0] += 1
            await answer(sessions, chat(user("hi"), who=f"user-{n}"), OWNER, "hello", ConversationRef(f"c{n}", "a"))
        kept = []
        for n in range(21):
            plan = await sessions(chat(user("hi"), assistant("hello"), user("again"), who=f"user-{n}"), ROUTE, None)
            kept.append(f"user-{n}" if plan.continues else "")
        return [k for k in kept if k]

    kept = run(main())
    assert len(kept) <= 20 and "user-0" not in kept and "user-20" in kept and "user-19" in kept


def test_sessions_survive_a_restart_with_the_embedded_store(tmp_path: Path) -> None:
    path = tmp_path / "state.json"

    async def first_run() -> None:
        async with EmbeddedStore(path) as store:
            await answer(planner(SessionStore(store.namespace("sessions"), SessionSettings())), chat(user("one")),
                         OWNER, "two", ConversationRef("chat-9", "a9"))

    async def second_run() -> ChatRequest:
        async with EmbeddedStore(path) as store:
            plan = await planner(SessionStore(store.namespace("sessions"), SessionSettings()))(
                chat(user("one"), assistant("two"), user("three")), ROUTE, None)
            return plan.request_for(OWNER, failover=False)

    run(first_run())
    sent = run(second_run())
    assert sent.conversation == ConversationRef("chat-9", "a9") and [m.text for m in sent.messages] == ["three"]
    assert "two" not in path.read_text() and "one" not in path.read_text()  # only ids and a hash are stored
