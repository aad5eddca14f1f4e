"""Messages requests → `ChatRequest`: blocks kept in order, roles placed where they belong."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from chatbridge.api.anthropic.dialect import AnthropicDialect
from chatbridge.core.errors import InvalidRequest
from chatbridge.core.types import (
    DocumentPart,
    ImagePart,
    ReasoningPart,
    RedactedReasoningPart,
    TextPart,
    ThinkingConfig,
    ToolChoice,
)

BASE: dict[str, Any] = {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


def parse(headers: list[tuple[bytes, bytes]] | None = None, **fields: Any) -> Any:
    return AnthropicDialect().parse(orjson.dumps({**BASE, **fields}), headers or [])


def test_system_blocks_stay_blocks_in_order() -> None:
    request = parse(system=[{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}}])
    system = request.messages[0]
    assert system.role == "system"
    assert system.content == [TextPart("a"), TextPart("b", cache_control={"type": "ephemeral"})]
    assert parse(system="plain").messages[0].content == "plain"
    assert parse(system=[]).messages[0].role == "user"


def test_user_turn_tool_results_come_first_then_the_rest() -> None:
    request = parse(messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "plan", "signature": "s1"}, {"type": "redacted_thinking", "data": "r"},
            {"type": "text", "text": "calling"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "and"},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "ok"}], "is_error": True},
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
        {"role": "system", "content": "mid"},
    ])
    roles = [m.role for m in request.messages]
    assert roles == ["user", "assistant", "tool", "user", "system"]
    assistant = request.messages[1]
    assert assistant.content == [ReasoningPart("plan", "s1"), RedactedReasoningPart("r"), TextPart("calling")]
    assert assistant.reasoning_content == "plan"
    assert [(c.id, c.name, orjson.loads(c.arguments)) for c in assistant.tool_calls] == [("toolu_1", "f", {"a": 1})]
    tool = request.messages[2]
    assert tool.tool_call_id == "toolu_1" and tool.is_error and tool.content == "ok"
    assert request.messages[3].content == [TextPart("and"), ImagePart("https://x/y.png")]
    assert request.messages[4].content == "mid"


def test_documents_and_images() -> None:
    request = parse(messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}, "title": "N"},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "inline"}]}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
    ]}])
    parts = request.messages[0].content
    assert parts[0] == DocumentPart("notes", "text/plain", "text", "N")
    assert parts[1] == DocumentPart("JVBE", "application/pdf", "base64")
    assert parts[2] == TextPart("inline")
    assert parts[3] == ImagePart("data:image/jpeg;base64,AAAA")


def test_options() -> None:
    request = parse(
        stream=True, temperature=0.5, top_p=1, top_k=40, stop_sequences=["END"], metadata={"user_id": "u1"},
        thinking={"type": "enabled", "budget_tokens": 2048}, output_config={"effort": "low"},
        tools=[{"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True}, cache_control={"type": "ephemeral"},
        context_management={"edits": []}, unknown_future_field=1,
    )
    assert request.stream and request.max_tokens == 100 and request.temperature == 0.5 and request.top_p == 1.0
    assert request.top_k == 40 and request.stop == ["END"] and request.user == "u1"
    assert request.thinking == ThinkingConfig("enabled", 2048) and request.effort == "low"
    assert request.tool_choice == ToolChoice("required") and not request.parallel_tool_calls
    assert request.tools[0].cache_control == {"type": "ephemeral"} and request.extra == {}
    assert parse().thinking == ThinkingConfig("disabled") and parse(thinking={"type": "adaptive"}).thinking.wanted


def test_session_header_is_the_fallback_session_key() -> None:
    headers = [(b"x-claude-code-session-id", b"sess-1")]
    assert parse(headers).user == "sess-1"
    assert parse(headers, metadata={"user_id": "u"}).user == "u"


@pytest.mark.parametrize(("fields", "where"), [
    ({"max_tokens": None}, "max_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages.0.content.0.text"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]},
     "messages.0.content.0.source.media_type"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"thinking": {"type": "enabled", "budget_tokens": 0}}, "thinking.budget_tokens"),
    ({"system": [{"type": "text"}]}, "system.0.text"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "x"}]}]},
     "messages.0.content.0"),
    ({"mcp_servers": [{"type": "url", "url": "https://x"}]}, "mcp_servers"),
    ({"tools": [{"name": "t"}]}, "tools.0.input_schema"),
    ({"tools": [{"name": "t", "input_schema": {}}, {"name": "t", "input_schema": {}}]}, "tools.1.name"),
])
def test_errors_name_the_field(fields: dict[str, Any], where: str) -> None:
    body = {**BASE, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(InvalidRequest) as caught:
        AnthropicDialect().parse(orjson.dumps(body), [])
    assert caught.value.message.startswith(where), caught.value.message


@pytest.mark.parametrize("field", ["temperature", "top_p"])
def test_a_number_that_is_not_finite_is_refused_as_such(field: str) -> None:
    body = orjson.dumps(BASE)[:-1] + b',"' + field.encode() + b'":NaN}'
    with pytest.raises(InvalidRequest) as caught:
        AnthropicDialect().parse(body, [])
    assert caught.value.param == field and "finite number" in caught.value.message
