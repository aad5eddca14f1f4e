"""The normaliser: every "Improperly formed request" rule, as a pure function over a chat history."""

from __future__ import annotations

import pytest

from chatbridge.core.errors import InvalidRequest
from chatbridge.core.types import ImagePart, Message, TextPart, ToolCall
from chatbridge.providers.kiro.conversation import (
    CONTINUE,
    EMPTY,
    MISSING_RESULT,
    RESULTS_ONLY,
    AssistantTurn,
    Conversation,
    ToolResult,
    UserTurn,
    normalise,
)

PNG = "iVBORw0KGgo="


def user(text: str) -> Message:
    return Message(role="user", content=text)


def assistant(text: str | None = None, *calls: tuple[str, str, str]) -> Message:
    return Message(role="assistant", content=text, tool_calls=[ToolCall(i, n, a) for i, n, a in calls])


def tool(call_id: str, text: str) -> Message:
    return Message(role="tool", content=text, tool_call_id=call_id)


def roles(conversation: Conversation) -> list[str]:
    return ["user" if isinstance(t, UserTurn) else "assistant" for t in [*conversation.history, conversation.current]]


def test_two_user_turns_in_a_row_become_one() -> None:
    conversation = normalise([user("Hello"), user("Are you there?")])
    assert conversation.history == [] and conversation.current.text == "Hello\n\nAre you there?"


def test_turns_alternate_and_end_with_the_users() -> None:
    conversation = normalise([user("a"), assistant("b"), assistant("c"), user("d"), user("e")])
    assert roles(conversation) == ["user", "assistant", "user"]
    assert [t.text for t in conversation.history] == ["a", "b\n\nc"] and conversation.current.text == "d\n\ne"


def test_a_leading_assistant_turn_gets_a_user_turn_before_it() -> None:
    conversation = normalise([assistant("Hi, how can I help?"), user("Tell me a joke")])
    assert roles(conversation) == ["user", "assistant", "user"] and conversation.history[0].text == EMPTY


def test_a_prefilled_assistant_turn_goes_into_the_history() -> None:
    conversation = normalise([user("Write JSON"), assistant("{")])
    assert roles(conversation) == ["user", "assistant", "user"]
    assert conversation.history[1].text == "{" and conversation.current.text == CONTINUE


def test_system_prompts_are_folded_into_the_first_user_turn() -> None:
    messages = [Message(role="system", content="Be brief."), Message(role="developer", content="Answer in French."),
                user("Hi"), assistant("Salut"), Message(role="system", content="Now in English."), user("Again")]
    conversation = normalise(messages)
    assert conversation.history[0].text == "Be brief.\n\nAnswer in French.\n\nHi"
    assert conversation.current.text == "Now in English.\n\nAgain"


def test_a_conversation_of_only_a_system_prompt_still_has_a_user_turn() -> None:
    conversation = normalise([Message(role="system", content="You are a poet.")])
    assert conversation.current.text == "You are a poet." and conversation.history == []


def test_unordered_tool_results_are_put_in_the_order_of_their_uses() -> None:
    messages = [user("Weather in Paris and Rome?"),
                assistant(None, ("call_1", "get_weather", '{"city": "Paris"}'), ("call_2", "get_weather", '{"city": "Rome"}')),
                tool("call_2", "rainy"), tool("call_1", "sunny")]
    conversation = normalise(messages)
    assert [r.tool_use_id for r in conversation.current.results] == ["call_1", "call_2"]
    assert [r.text for r in conversation.current.results] == ["sunny", "rainy"]
    assert conversation.current.text == RESULTS_ONLY
    uses = conversation.history[1]
    assert isinstance(uses, AssistantTurn) and uses.text == EMPTY and uses.tool_uses[0].input == {"city": "Paris"}


def test_a_tool_use_without_a_result_gets_one() -> None:
    messages = [user("Do two things"), assistant("On it", ("call_1", "a", "{}"), ("call_2", "b", "{}")),
                tool("call_1", "done"), user("And?")]
    conversation = normalise(messages)
    assert conversation.current.results == [ToolResult("call_1", "done"), ToolResult("call_2", MISSING_RESULT, "error")]
    assert conversation.current.text == "And?"


def test_an_interrupted_tool_call_at_the_end_is_answered_too() -> None:
    conversation = normalise([user("Go"), assistant(None, ("call_1", "a", "{}"))])
    assert conversation.current.text == CONTINUE
    assert conversation.current.results == [ToolResult("call_1", MISSING_RESULT, "error")]


def test_orphan_and_duplicate_results_become_text_or_are_dropped() -> None:
    messages = [user("hi"), tool("call_old", "stale result"), assistant("x", ("call_1", "a", "{}")),
                tool("call_1", "first"), tool("call_1", "again"), tool("call_zzz", "stray")]
    conversation = normalise(messages)
    first = conversation.history[0]
    assert isinstance(first, UserTurn) and first.results == [] and "[Result of tool call call_old]\nstale result" in first.text
    assert conversation.current.results == [ToolResult("call_1", "first")]
    assert "[Result of tool call call_zzz]\nstray" in conversation.current.text and "again" not in conversation.current.text


def test_no_content_is_ever_empty() -> None:
    messages = [user("   "), assistant(""), tool("nope", ""), user("")]
    conversation = normalise(messages)
    for turn in [*conversation.history, conversation.current]:
        assert turn.text.strip()
    assert all(r.text.strip() for r in conversation.current.results)


def test_tool_arguments_become_objects() -> None:
    conversation = normalise([user("x"), assistant(None, ("c1", "a", "not json"), ("c2", "b", "[1, 2]"),
                                                   ("c3", "c", '{"": 1, "ok": {"": 2, "k": 3}}')), tool("c1", "r"),
                              tool("c2", "r"), tool("c3", "r")])
    uses = conversation.history[1]
    assert isinstance(uses, AssistantTurn)
    assert [u.input for u in uses.tool_uses] == [{}, {}, {"ok": {"k": 3}}]


def test_images_go_as_bytes() -> None:
    message = Message(role="user", content=[TextPart("What is this?"), ImagePart(f"data:image/png;base64,{PNG}"),
                                            ImagePart(f"data:image/jpg;base64,{PNG}")])
    conversation = normalise([message])
    assert [(i.format, i.data) for i in conversation.current.images] == [("png", PNG), ("jpeg", PNG)]
    assert conversation.current.text == "What is this?"


@pytest.mark.parametrize(("url", "words"), [
    ("https://example.com/cat.png", "not links"),
    (f"data:image/bmp;base64,{PNG}", "image/bmp is not supported"),
    ("data:image/png;base64,@@@", "not valid base64"),
])
def test_images_kiro_cannot_take_are_a_400_naming_the_part(url: str, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words) as caught:
        normalise([Message(role="user", content=[TextPart("see"), ImagePart(url)])])
    assert caught.value.param == "messages[0].content[1].image_url.url"


def test_unsigned_reasoning_is_never_replayed() -> None:
    message = Message(role="assistant", content="42", reasoning_content="I thought about it")
    conversation = normalise([user("q"), message, user("why?")])
    assert not conversation.has_thoughts
