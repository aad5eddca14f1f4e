"""Sessions across replicas: a conversation started through one replica continues through another.

Each replica has its own `SessionStore` over the one shared state store, as separate gateway
processes behind nginx have; the shared memory store and the real Redis (DB 11) both serve.
"""

from __future__ import annotations

from chatbridge.core.types import ConversationRef
from chatbridge.features.sessions import SessionPlanner, SessionSettings, SessionStore
from chatbridge.state import StateStore
from tests.features.test_sessions import OWNER, answer, assistant, chat, user
from tests.pool.replicas import backend, run_shared

__all__ = ["backend"]


def test_a_conversation_started_on_one_replica_continues_on_the_others(backend: str) -> None:
    async def body(store: StateStore) -> None:
        one, two, three = (SessionPlanner(SessionStore(store.namespace("sessions"), SessionSettings())) for _ in range(3))
        first = chat(user("我叫张三，来自北京"))
        _, sent1 = await answer(one, first, OWNER, "你好，张三！", ConversationRef("chat-1", "a1"))
        second = chat(*first.messages, assistant("你好，张三！"), user("我刚才说我来自哪里？"))
        plan2, sent2 = await answer(two, second, OWNER, "你说你来自北京。", ConversationRef("chat-1", "a2"))
        third = chat(*second.messages, assistant("你说你来自北京。"), user("谢谢"))
        _, sent3 = await answer(three, third, OWNER, "不客气", ConversationRef("chat-1", "a3"))
        assert sent1.conversation is None
        assert plan2.prefer == OWNER.id  # replica two sends it to the account that owns the chat
        assert sent2.conversation == ConversationRef("chat-1", "a1") and [m.text for m in sent2.messages] == ["我刚才说我来自哪里？"]
        assert sent3.conversation == ConversationRef("chat-1", "a2") and [m.text for m in sent3.messages] == ["谢谢"]

    run_shared(backend, body)
