"""Kimi conversations kept per OpenAI `user`, seen from the `openai` SDK and from the upstream's side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import GatewayServer
from tests.pool.helpers import admin
from tests.upstreams import KimiEmulator, KimiReply

Start = Callable[..., GatewayServer]


def ask(client: Any, messages: list[dict[str, str]], **options: Any) -> str:
    reply = client.chat.completions.create(model=options.pop("model", "kimi"), messages=messages, **options)
    return str(reply.choices[0].message.content)


def streamed(client: Any, messages: list[dict[str, str]], **options: Any) -> str:
    chunks = client.chat.completions.create(model=options.pop("model", "kimi"), messages=messages, stream=True, **options)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_the_original_tools_session_example_is_answered_inside_the_same_upstream_chat(
        kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    client = kimi_gateway().openai()
    history = [{"role": "user", "content": "我叫张三，来自北京"}]
    first = ask(client, history, user="zhang_san_001")
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "我刚才说我来自哪里？"}]
    second = ask(client, history, user="zhang_san_001")
    assert "北京" in second
    one, two = kimi_emu.chat_calls
    assert one.new_chat and not two.new_chat and two.chat_id == one.chat_id
    assert two.text == "我刚才说我来自哪里？"  # only the new turn went upstream, continuing the answer
    assert two.parent_id == next(m for m in kimi_emu.chat(one.chat_id) if m["role"] == "assistant")["id"]


def test_three_turns_with_user_send_turns_two_and_three_as_single_new_messages_into_one_chat(
        kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    client = kimi_gateway().openai()
    history: list[dict[str, str]] = []
    for turn, text in enumerate(["第一句：你好", "第二句：今天天气如何", "第三句：谢谢"]):
        history.append({"role": "user", "content": text})
        answer = streamed(client, history, user="alice") if turn == 1 else ask(client, history, user="alice")
        history.append({"role": "assistant", "content": answer})
    calls = kimi_emu.chat_calls
    assert [c.new_chat for c in calls] == [True, False, False]
    assert len({c.chat_id for c in calls}) == 1
    assert [c.text for c in calls] == ["第一句：你好", "第二句：今天天气如何", "第三句：谢谢"]
    assert calls[2].parent_id != calls[1].parent_id  # each turn continues from the latest answer


def test_without_user_the_same_three_turns_are_three_new_chats_with_the_history_flattened(
        kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    client = kimi_gateway().openai()
    history: list[dict[str, str]] = []
    for text in ["第一句：你好", "第二句：今天天气如何", "第三句：谢谢"]:
        history.append({"role": "user", "content": text})
        history.append({"role": "assistant", "content": ask(client, history)})
    calls = kimi_emu.chat_calls
    assert [c.new_chat for c in calls] == [True, True, True] and len({c.chat_id for c in calls}) == 3
    assert calls[0].text == "第一句：你好"
    assert "user: 第一句：你好" in calls[2].text and "assistant: " in calls[2].text and calls[2].text.endswith("user: 第三句：谢谢")


def test_an_edited_history_starts_a_new_chat_with_the_whole_history(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    client = kimi_gateway().openai()
    first = ask(client, [{"role": "user", "content": "我叫张三，来自北京"}], user="bob")
    edited = [{"role": "user", "content": "我叫张三，来自上海"}, {"role": "assistant", "content": first},
              {"role": "user", "content": "我刚才说我来自哪里？"}]
    assert "上海" in ask(client, edited, user="bob")
    one, two = kimi_emu.chat_calls
    assert two.new_chat and two.chat_id != one.chat_id and "来自上海" in two.text


def test_another_model_or_another_user_is_another_conversation(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    client = kimi_gateway().openai()
    first = ask(client, [{"role": "user", "content": "hi"}], user="carol")
    follow = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": first}, {"role": "user", "content": "more"}]
    ask(client, follow, user="carol", model="kimi-thinking")
    ask(client, follow, user="dave")
    assert [c.new_chat for c in kimi_emu.chat_calls] == [True, True, True]


def test_sessions_are_kept_per_client_key(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    gateway = kimi_gateway(valid_api_key="sk-client-one-0123456789,sk-client-two-0123456789")
    one, two = gateway.openai(api_key="sk-client-one-0123456789"), gateway.openai(api_key="sk-client-two-0123456789")
    first = ask(one, [{"role": "user", "content": "hi"}], user="shared-name")
    follow = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": first}, {"role": "user", "content": "more"}]
    ask(two, follow, user="shared-name")
    assert kimi_emu.chat_calls[1].new_chat  # another client's `user` of the same name is not this conversation


def test_when_the_owning_account_is_busy_elsewhere_the_follow_up_fails_over_as_a_new_chat(
        kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    client = kimi_gateway(accounts=2).openai()
    history = [{"role": "user", "content": "我叫张三，来自北京"}]
    history += [{"role": "assistant", "content": ask(client, history, user="erin")},
                {"role": "user", "content": "我刚才说我来自哪里？"}]
    owner = kimi_emu.chat_calls[0].user
    kimi_emu.hold_stream(owner)  # the owner's browser is streaming a reply: Kimi refuses a second one
    try:
        answer = ask(client, history, user="erin")
    finally:
        kimi_emu.release_stream(owner)
    assert "北京" in answer  # the user sees an answer, not an error
    last = kimi_emu.chat_calls[-1]
    assert last.user != owner and last.new_chat and "我叫张三，来自北京" in last.text
    history += [{"role": "assistant", "content": answer}, {"role": "user", "content": "谢谢"}]
    ask(client, history, user="erin")
    assert kimi_emu.chat_calls[-1].chat_id == last.chat_id and not kimi_emu.chat_calls[-1].new_chat  # moved with it


@pytest.mark.parametrize("action", ["disable", "cool"])
def test_when_the_owning_account_is_disabled_or_resting_the_follow_up_fails_over_as_a_new_chat(
        kimi_emu: KimiEmulator, kimi_gateway: Start, action: str) -> None:
    gateway = kimi_gateway(accounts=2)
    client = gateway.openai()
    history = [{"role": "user", "content": "我叫张三，来自北京"}]
    history += [{"role": "assistant", "content": ask(client, history, user="erin")},
                {"role": "user", "content": "我刚才说我来自哪里？"}]
    owner_user = kimi_emu.chat_calls[0].user
    pool = gateway.runtime.pools["kimi"]
    [owner] = [entry for entry in pool.entries if entry.requests_served == 1]
    if action == "disable":
        with admin(gateway) as http:
            assert http.post(f"/admin/pools/kimi/{owner.credential.id}/disable").json()["data"]["state"] == "disabled"
    else:
        owner.cooldown_until = pool.now() + 60  # resting after failures, as the pool rests it: cooling
    assert owner.state(pool.now()).value == ("disabled" if action == "disable" else "cooling")
    answer = ask(client, history, user="erin")
    assert "北京" in answer  # the user sees an answer, not an error
    last = kimi_emu.chat_calls[-1]
    assert last.user != owner_user and last.new_chat and "我叫张三，来自北京" in last.text


def test_a_chat_deleted_upstream_is_started_anew_with_the_history(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    client = kimi_gateway().openai()
    history = [{"role": "user", "content": "我叫张三，来自北京"}]
    history += [{"role": "assistant", "content": ask(client, history, user="frank")},
                {"role": "user", "content": "我刚才说我来自哪里？"}]
    kimi_emu._chats.clear()  # deleted in the web UI
    assert "北京" in ask(client, history, user="frank")
    assert kimi_emu.chat_calls[-1].new_chat and "我叫张三" in kimi_emu.chat_calls[-1].text


def test_a_thinking_and_search_answer_continues_too(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.reply = KimiReply(text="北京是首都。", thinking="想一想。", sources=[{"title": "t", "url": "https://x.org"}],
                               cite=[1])
    client = kimi_gateway().openai()
    history = [{"role": "user", "content": "北京？"}]
    answer = streamed(client, history, user="gina", model="kimi-thinking-search")
    assert answer.startswith("北京是首都[1]。") and "1. [t](https://x.org)" in answer
    history += [{"role": "assistant", "content": answer}, {"role": "user", "content": "再说说"}]
    streamed(client, history, user="gina", model="kimi-thinking-search")
    assert not kimi_emu.chat_calls[1].new_chat  # the answer as the client received it, footnotes and all
