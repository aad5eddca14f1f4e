"""History rewriting: tool results and earlier calls reach the upstream; nothing is dropped."""

from __future__ import annotations

import json

from chatbridge.core.types import ImagePart, Message, TextPart, ToolCall
from chatbridge.features.tools import parse_reply, rewrite_history, with_system_prompt
from tests.features.tools.helpers import CORPUS_MARKER

M = CORPUS_MARKER


def _conversation() -> list[Message]:
    return [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Weather in Paris and Oslo, and the time?"),
        Message(
            role="assistant",
            content="Checking both.",
            tool_calls=[
                ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
                ToolCall(id="call_b", name="get_weather", arguments='{"city": "Oslo"}'),
            ],
        ),
        Message(role="tool", tool_call_id="call_a", content="sunny, 21C"),
        Message(role="tool", tool_call_id="call_b", content="rain, 9C"),
        Message(role="assistant", content=None, tool_calls=[ToolCall(id="call_c", name="get_time", arguments="")]),
        Message(role="tool", tool_call_id="call_c", content="12:00"),
        Message(role="user", content="Thanks!"),
    ]


def test_tool_results_carry_name_call_id_and_text() -> None:
    rewritten = rewrite_history(_conversation(), M)
    results = rewritten[3].text
    assert rewritten[3].role == "user"
    assert M.result_open("get_weather", "call_a") + "\nsunny, 21C\n" + M.result_close in results
    assert M.result_open("get_weather", "call_b") + "\nrain, 9C\n" + M.result_close in results
    assert results.index("call_a") < results.index("call_b")
    assert M.result_open("get_time", "call_c") in rewritten[5].text
    assert all(m.role != "tool" and m.tool_call_id is None for m in rewritten)


def test_assistant_calls_are_written_in_the_call_format() -> None:
    rewritten = rewrite_history(_conversation(), M)
    first = rewritten[2]
    assert first.role == "assistant" and first.tool_calls == []
    assert first.text.startswith("Checking both.\n\n" + M.open_tag)
    reply = parse_reply(first.text, M)
    assert reply.text.strip() == "Checking both."
    assert [(c.name, json.loads(c.arguments)) for c in reply.calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    no_text = rewritten[4]
    assert no_text.text == M.render_call("get_time", {})


def test_nothing_the_client_sent_is_dropped() -> None:
    original = _conversation()
    rewritten = rewrite_history(original, M)
    joined = "\n".join(m.text for m in rewritten)
    for message in original:
        assert message.text in joined
        for call in message.tool_calls:
            assert call.name in joined and json.dumps(json.loads(call.arguments or "{}")) in joined
    assert [m.role for m in rewritten] == ["system", "user", "assistant", "user", "assistant", "user", "user"]
    assert rewritten[0] is original[0] and rewritten[-1] is original[-1]
    assert original[2].tool_calls and original[3].role == "tool"  # the client's objects are untouched


def test_unknown_ids_fall_back_to_the_message_name() -> None:
    rewritten = rewrite_history(
        [
            Message(role="tool", tool_call_id="call_zz", name="lookup", content="x"),
            Message(role="user", content="next"),
            Message(role="tool", content="y"),
        ],
        M,
    )
    assert M.result_open("lookup", "call_zz") in rewritten[0].text
    assert M.result_open("unknown", "unknown") in rewritten[2].text


def test_content_parts_and_images_are_kept() -> None:
    image = ImagePart(url="data:image/png;base64,AAAA")
    rewritten = rewrite_history(
        [
            Message(role="assistant", tool_calls=[ToolCall(id="c1", name="shot", arguments="{}")]),
            Message(role="tool", tool_call_id="c1", content=[TextPart("see image"), image]),
            Message(role="tool", tool_call_id="c1", content="second"),
        ],
        M,
    )
    merged = rewritten[1]
    assert isinstance(merged.content, list)
    assert image in merged.content
    assert "see image" in merged.text and "second" in merged.text


def test_arguments_that_are_not_json_stay_visible() -> None:
    rewritten = rewrite_history(
        [Message(role="assistant", tool_calls=[ToolCall(id="c", name="f", arguments="{broken")])], M
    )
    assert json.dumps("{broken") in rewritten[0].text


def test_the_tool_prompt_joins_the_client_system_text_in_one_system_turn() -> None:
    """Many chat templates accept a single, leading system message: never add a second one."""
    messages = [Message(role="system", content="a"), Message(role="developer", content="b\n"), Message(role="user")]
    placed = with_system_prompt(messages, "TOOLS")
    assert [(m.role, m.text) for m in placed] == [("system", "a"), ("developer", "b\n\nTOOLS"), ("user", "")]
    assert placed[0] is messages[0] and placed[2] is messages[2] and messages[1].text == "b\n"  # the client's objects are untouched
    assert [(m.role, m.text) for m in with_system_prompt([Message(role="user", content="hi")], "TOOLS")] == [
        ("system", "TOOLS"), ("user", "hi"),
    ]
    parts = with_system_prompt([Message(role="system", content=[TextPart("Be brief.")]), Message(role="user")], "TOOLS")
    assert parts[0].content == [TextPart("Be brief."), TextPart("\n\nTOOLS")]
    empty = with_system_prompt([Message(role="system", content=""), Message(role="user")], "TOOLS")
    assert empty[0].text == "TOOLS"
    later = with_system_prompt([Message(role="user"), Message(role="system", content="mid")], "TOOLS")
    assert [m.role for m in later] == ["system", "user", "system"] and later[2].text == "mid"
