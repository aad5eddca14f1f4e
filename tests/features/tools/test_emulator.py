"""ToolEmulator.run end to end against a scripted upstream: rounds, ordering, finish, usage."""

from __future__ import annotations

import asyncio
import json
import random
import re

import pytest

from chatbridge.core.errors import ToolCallDeclined
from chatbridge.core.types import (
    Event,
    Message,
    ReasoningDelta,
    RedactedReasoning,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from chatbridge.features.tools import ToolEmulator, ToolSettings, parse_reply
from tests.features.tools.helpers import (
    FakeUpstream,
    answer,
    drive,
    make_request,
    marker_for,
    run_emulator,
)

M = marker_for(0)
WEATHER = M.render_call("get_weather", {"city": "Paris"})


def test_text_streams_before_the_call_and_the_call_is_shaped_like_openai() -> None:
    upstream = FakeUpstream(answer("Let me check.\n" + WEATHER + "\nIt is sunny!", reasoning="thinking..."))
    result = run_emulator(make_request(), upstream)
    kinds = [type(e).__name__ for e in result.events]
    assert kinds[0] == "ReasoningDelta"
    assert kinds.index("TextDelta") < kinds.index("ToolCallDelta")
    assert kinds[-2:] == ["Usage", "Finish"]
    assert result.text == "Let me check."  # layout whitespace before the call is dropped; the hallucinated result after the call is dropped
    deltas = [e for e in result.events if isinstance(e, ToolCallDelta)]
    first, rest = deltas[0], deltas[1:]
    assert (first.index, first.name, first.arguments) == (0, "get_weather", "")
    assert first.id is not None and re.fullmatch(r"call_[A-Za-z0-9]{24}", first.id)
    assert rest and all(d.id is None and d.name is None and d.index == 0 for d in rest)
    assert json.loads("".join(d.arguments for d in rest)) == {"city": "Paris"}
    assert result.finish == "tool_calls"
    assert sum(isinstance(e, ToolCallDelta) and e.id is not None for e in result.events) == 1


def test_text_is_streamed_as_it_arrives() -> None:
    """The first TextDelta reaches the client before the upstream has finished the round."""
    seen: list[int] = []
    upstream = FakeUpstream(answer("Hello there, a long answer without any call.", chunk=4))

    async def main() -> None:
        emulator = ToolEmulator(make_request(), ToolSettings(), rng=random.Random(0))
        async for event in drive(emulator, upstream):
            if isinstance(event, TextDelta):
                seen.append(upstream.closed)

    asyncio.run(main())
    assert seen[0] == 0  # upstream still open when text went out
    assert len(seen) > 3


def test_upstream_request_has_prompt_rewritten_history_and_no_tools() -> None:
    messages = [
        Message(role="user", content="Weather?"),
        Message(role="assistant", tool_calls=[ToolCall(id="call_1", name="get_weather", arguments='{"city": "Rome"}')]),
        Message(role="tool", tool_call_id="call_1", content="cloudy"),
    ]
    upstream = FakeUpstream(answer("It is cloudy in Rome."))
    result = run_emulator(make_request(messages=messages), upstream)
    sent = upstream.requests[0]
    assert sent.tools == [] and sent.tool_choice == ToolChoice()
    assert sent.messages[0].role == "system" and M.open_tag in sent.messages[0].text
    assert M.render_call("get_weather", {"city": "Rome"}) in sent.messages[2].text
    assert M.result_open("get_weather", "call_1") + "\ncloudy" in sent.messages[3].text
    assert result.text == "It is cloudy in Rome." and result.finish == "stop"


def test_several_calls_get_consecutive_indexes() -> None:
    text = WEATHER + M.render_call("search", {"query": "x"}) + M.render_call("get_time", {})
    result = run_emulator(make_request(), FakeUpstream(answer(text)))
    assert [c["name"] for c in result.calls] == ["get_weather", "search", "get_time"]
    assert len({c["id"] for c in result.calls}) == 3
    assert result.text == "" and result.finish == "tool_calls"


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    text = WEATHER + M.render_call("search", {"query": "x"})
    upstream = FakeUpstream(answer(text))
    result = run_emulator(make_request(parallel_tool_calls=False), upstream)
    assert result.parsed_calls == [("get_weather", {"city": "Paris"})]
    assert "at most one tool per reply" in upstream.requests[0].messages[0].text


def test_required_without_a_call_gets_one_corrective_round() -> None:
    upstream = FakeUpstream(
        answer("Paris is usually mild.", usage=Usage(100, 10)),
        answer("Right.\n" + WEATHER, usage=Usage(130, 20, estimated=True)),
    )
    result = run_emulator(make_request(tool_choice=ToolChoice(mode="required")), upstream)
    assert len(upstream.requests) == 2
    followup = upstream.requests[1].messages
    assert followup[-2] == Message(role="assistant", content="Paris is usually mild.")
    assert followup[-1].role == "user" and "must call a tool" in followup[-1].text
    assert result.text == "Right."  # the discarded first answer never reached the client
    assert result.parsed_calls == [("get_weather", {"city": "Paris"})]
    assert result.usage == Usage(230, 30, estimated=True)
    assert result.finish == "tool_calls"


def test_required_without_a_call_after_the_corrective_round_is_an_error_not_a_text_answer() -> None:
    upstream = FakeUpstream(answer("No tool fits.", finish="stop"), answer("Still no tool."))
    with pytest.raises(ToolCallDeclined) as declined:
        run_emulator(make_request(tool_choice=ToolChoice(mode="required")), upstream)
    assert len(upstream.requests) == 2
    assert 'declined to call a tool although tool_choice "required" requires one' in declined.value.message
    assert "No tool fits." in declined.value.message


def test_required_with_an_unreadable_call_says_so_rather_than_text() -> None:
    """A call block that stays broken through the repair round: the error names the broken call."""
    broken = M.open_tag + '{"name": "get_weather", "arguments": {"city": "Paris",}}' + M.close_tag
    upstream = FakeUpstream(answer("Checking.\n" + broken), answer(broken))
    with pytest.raises(ToolCallDeclined) as declined:
        run_emulator(make_request(tool_choice=ToolChoice(mode="required")), upstream)
    assert "wrote a tool call that could not be read: the tool call is not valid JSON" in declined.value.message
    assert "answered in text" not in declined.value.message


def test_a_named_function_that_never_comes_is_an_error_naming_it() -> None:
    upstream = FakeUpstream(answer("I will not."), answer("Still not."))
    with pytest.raises(ToolCallDeclined) as declined:
        run_emulator(make_request(tool_choice=ToolChoice(mode="function", name="get_weather")), upstream)
    assert "tool_choice named 'get_weather'" in declined.value.message


def test_auto_without_a_call_is_still_a_text_answer() -> None:
    result = run_emulator(make_request(), FakeUpstream(answer("No tool needed.")))
    assert result.text == "No tool needed." and result.calls == [] and result.finish == "stop"


def test_named_function_call_to_another_tool_is_repaired() -> None:
    upstream = FakeUpstream(answer(WEATHER), answer(M.render_call("search", {"query": "paris"})))
    choice = ToolChoice(mode="function", name="search")
    result = run_emulator(make_request(tool_choice=choice), upstream)
    assert "must call the tool 'search'" in upstream.requests[0].messages[0].text
    assert "must call the tool 'search', not 'get_weather'" in upstream.requests[1].messages[-1].text
    assert result.parsed_calls == [("search", {"query": "paris"})]


@pytest.mark.parametrize("parallel", [True, False])
def test_named_function_keeps_its_call_and_drops_calls_to_other_tools(parallel: bool) -> None:
    """The model calls the named tool and another one: the named call is the answer, in one round."""
    search = M.render_call("search", {"query": "paris"})
    upstream = FakeUpstream(answer(search + "\n" + WEATHER), answer(search + "\n" + WEATHER))
    choice = ToolChoice(mode="function", name="get_weather")
    result = run_emulator(make_request(tool_choice=choice, parallel_tool_calls=parallel), upstream)
    assert result.parsed_calls == [("get_weather", {"city": "Paris"})]
    assert result.finish == "tool_calls" and len(upstream.requests) == 1


def test_half_an_escaped_emoji_in_the_arguments_stays_encodable() -> None:
    """`"\\ud83d"` decodes to a lone surrogate; it becomes U+FFFD, so the arguments encode as UTF-8 (no 500)."""
    block = M.open_tag + r'{"name": "get_weather", "arguments": {"city": "Paris \ud83d \ud83d\ude00"}}' + M.close_tag
    result = run_emulator(make_request(), FakeUpstream(answer(block)))
    arguments = result.calls[0]["arguments"]
    arguments.encode("utf-8")
    assert json.loads(arguments) == {"city": "Paris \ufffd \U0001f600"}


@pytest.mark.parametrize("block", ['```json\n{"tool_calls": []}\n```', M.open_tag + "[]" + M.close_tag])
def test_an_empty_call_block_is_no_call_and_the_text_keeps_its_order(block: str) -> None:
    """`{"tool_calls": []}` mid-answer: the text after it streams as content, and the block is not tacked on at the end."""
    upstream = FakeUpstream(answer("Thinking it over.\n" + block + "\nThe answer is 4."))
    result = run_emulator(make_request(), upstream)
    assert result.text == "Thinking it over.\n\nThe answer is 4."
    assert result.calls == [] and result.finish == "stop" and len(upstream.requests) == 1


def test_invalid_arguments_get_a_repair_round_that_shows_the_error() -> None:
    upstream = FakeUpstream(
        answer("On it.\n" + M.render_call("get_weather", {"town": "Paris"}), usage=Usage(50, 5)),
        answer("Sorry.\n" + WEATHER, usage=Usage(70, 6)),
    )
    result = run_emulator(make_request(), upstream)
    repair = upstream.requests[1].messages
    assert repair[-2].role == "assistant" and '"town"' in repair[-2].text
    assert "'city' is a required property" in repair[-1].text
    assert result.text == "On it."  # the repair round adds no text
    assert result.parsed_calls == [("get_weather", {"city": "Paris"})]
    assert result.usage == Usage(120, 11)
    assert result.finish == "tool_calls"


def test_a_failed_repair_returns_the_last_attempt_as_is() -> None:
    bad1 = M.render_call("get_weather", {"town": "Paris"})
    bad2 = M.render_call("get_weather", {"city": "Paris", "unit": "kelvin"})
    upstream = FakeUpstream(answer(bad1), answer(bad2))
    result = run_emulator(make_request(), upstream)
    assert len(upstream.requests) == 2
    assert result.parsed_calls == [("get_weather", {"city": "Paris", "unit": "kelvin"})]


def test_repair_attempts_setting_bounds_the_rounds() -> None:
    bad = answer(M.render_call("get_weather", {}))
    assert len(_rounds(ToolSettings(repair_attempts=0), bad)) == 1
    assert len(_rounds(ToolSettings(repair_attempts=3), bad, bad, bad, bad)) == 4


def _rounds(settings: ToolSettings, *rounds: list[Event]) -> list[object]:
    upstream = FakeUpstream(*rounds)
    run_emulator(make_request(), upstream, settings)
    return list(upstream.requests)


def test_malformed_call_that_stays_malformed_is_returned_as_text() -> None:
    broken = f"Here:\n{M.open_tag}\n{{'name': 'get_weather'}}\n{M.close_tag}"
    upstream = FakeUpstream(answer(broken), answer(broken.replace("Here", "Again")))
    result = run_emulator(make_request(), upstream)
    assert "could not be read" in upstream.requests[1].messages[-1].text
    assert result.text == broken and result.calls == [] and result.finish == "stop"


def test_a_repair_round_that_takes_the_call_back_answers_in_text() -> None:
    """Prose that looked like a call to an unknown tool: the model's plain answer wins, not the bogus call."""
    prose = 'The reply looks like {"tool_calls": [{"name": "x", "arguments": {}}]} here.'
    upstream = FakeUpstream(answer(prose), answer("It is a JSON object with a tool_calls list.", finish="length"))
    result = run_emulator(make_request(), upstream)
    assert "no tool named 'x'" in upstream.requests[1].messages[-1].text
    assert result.calls == [] and not any(isinstance(e, ToolCallDelta) for e in result.events)
    assert result.text == "The reply looks like\n\nIt is a JSON object with a tool_calls list."
    assert result.finish == "length"  # the finish of the round that gave the answer


def test_a_required_call_taken_back_in_the_repair_round_is_declined_with_the_repair_text() -> None:
    bad = "Sure.\n" + M.render_call("get_weather", {"town": "Paris"})
    upstream = FakeUpstream(answer(bad), answer("I cannot tell which city you mean."))
    with pytest.raises(ToolCallDeclined) as declined:
        run_emulator(make_request(tool_choice=ToolChoice(mode="required")), upstream)
    assert len(upstream.requests) == 2
    assert "I cannot tell which city you mean." in declined.value.message
    assert "town" not in declined.value.message  # the buffered, invalid call is not shown as the answer


def test_a_truncated_call_ends_with_length_and_no_call() -> None:
    cut = "Checking.\n" + M.open_tag + '\n{"name": "get_weather", "arguments": {"ci'
    upstream = FakeUpstream(answer(cut, finish="length"))
    result = run_emulator(make_request(), upstream)
    assert result.text == "Checking.\n"
    assert result.calls == [] and result.finish == "length"
    assert not any(isinstance(e, ToolCallDelta) for e in result.events)
    assert len(upstream.requests) == 1  # no repair of a cut-off answer


def test_complete_calls_before_a_truncated_one_are_kept_with_length() -> None:
    text = WEATHER + M.open_tag + '{"name": "search", "argu'
    result = run_emulator(make_request(), FakeUpstream(answer(text, finish="length")))
    assert result.parsed_calls == [("get_weather", {"city": "Paris"})]
    assert result.finish == "length"


def test_tool_choice_none_cuts_call_blocks_out_of_the_text() -> None:
    messages = [
        Message(role="user", content="Weather?"),
        Message(role="assistant", tool_calls=[ToolCall(id="c1", name="get_weather", arguments='{"city": "Rome"}')]),
        Message(role="tool", tool_call_id="c1", content="cloudy"),
    ]
    upstream = FakeUpstream(answer("Summary: " + WEATHER, finish="stop"))
    result = run_emulator(make_request(messages=messages, tool_choice=ToolChoice(mode="none")), upstream)
    assert result.text == "Summary:" and result.calls == [] and result.finish == "stop"
    system = upstream.requests[0].messages[0].text
    assert "disabled" in system and "## get_weather" not in system
    assert "cloudy" in upstream.requests[0].messages[3].text


GENERIC = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


@pytest.mark.parametrize(
    "text,shown",
    [
        ("Let me check.\n" + WEATHER + "\nIt is sunny in Paris.", "Let me check.\nIt is sunny in Paris."),
        (WEATHER + "\n\nIt is sunny.", "It is sunny."),
        ("Paris: " + WEATHER + " " + GENERIC + " sunny.", "Paris: sunny."),
        ("Truncated: " + M.open_tag + '{"name": "get_weather", "argu', "Truncated:"),
        ("Broken: " + M.open_tag + "{not json}" + M.close_tag + " after.", "Broken: after."),
        ("Use `<tool_call>` tags, like `" + GENERIC + "`.\n", "Use `<tool_call>` tags, like `" + GENERIC + "`.\n"),
        ("No calls at all.\n\n", "No calls at all.\n\n"),
    ],
)
def test_tool_choice_none_keeps_the_prose_at_every_chunking(text: str, shown: str) -> None:
    for chunk in (1, 2, 3, 7, 50, len(text)):
        upstream = FakeUpstream(answer(text, chunk=chunk))
        result = run_emulator(make_request(tool_choice=ToolChoice(mode="none")), upstream)
        assert (result.text, result.calls, result.finish) == (shown, [], "stop"), chunk
        assert len(upstream.requests) == 1  # no repair: nothing is called


def test_tool_history_without_tools_is_still_rewritten() -> None:
    messages = [Message(role="tool", tool_call_id="c1", name="lookup", content="42")]
    upstream = FakeUpstream(answer("The answer is 42."))
    result = run_emulator(make_request(messages=messages, tools=[]), upstream)
    assert M.result_open("lookup", "c1") in upstream.requests[0].messages[1].text
    assert result.text == "The answer is 42."


def test_reasoning_is_never_parsed_and_other_events_pass_through() -> None:
    events: list[Event] = [ReasoningDelta("maybe " + WEATHER), RedactedReasoning("conv-1"), *answer("Plain answer.")]
    result = run_emulator(make_request(), FakeUpstream(events))
    assert result.reasoning == "maybe " + WEATHER
    assert RedactedReasoning("conv-1") in result.events
    assert result.calls == [] and result.text == "Plain answer."


def test_exactly_one_finish_and_one_usage_even_over_rounds() -> None:
    upstream = FakeUpstream(answer(M.render_call("get_weather", {})), answer(WEATHER))
    result = run_emulator(make_request(), upstream)
    assert sum(isinstance(e, Usage) for e in result.events) == 1
    finishes = [i for i, e in enumerate(result.events) if type(e).__name__ == "Finish"]
    assert finishes == [len(result.events) - 1]


def test_no_usage_event_when_upstream_reports_none() -> None:
    events: list[Event] = [TextDelta("hi"), *answer("")[-1:]]
    result = run_emulator(make_request(), FakeUpstream(events))
    assert result.usage is None and result.finish == "stop"


def test_upstream_errors_propagate_and_the_stream_is_closed() -> None:
    upstream = FakeUpstream([TextDelta("partial")], error=ConnectionError("boom"))
    with pytest.raises(ConnectionError):
        run_emulator(make_request(), upstream)
    assert upstream.closed == 1


def test_a_client_that_goes_away_closes_the_upstream() -> None:
    upstream = FakeUpstream(answer("A long answer that the client will not read to the end.", chunk=3))

    async def main() -> None:
        stream = drive(ToolEmulator(make_request(), ToolSettings(), rng=random.Random(0)), upstream)
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(main())
    assert upstream.closed == 1


def test_unknown_named_tool_degrades_to_required() -> None:
    choice = ToolChoice(mode="function", name="not_offered")
    emulator = ToolEmulator(make_request(tool_choice=choice), ToolSettings(), rng=random.Random(0))
    assert emulator.choice == ToolChoice(mode="required")


def test_custom_prompt_reaches_upstream() -> None:
    settings = ToolSettings(custom_prompt="CUSTOM {tool_list} FORMAT {call_format}")
    emulator = ToolEmulator(make_request(), settings, rng=random.Random(0))
    system = emulator.upstream_request().messages[0].text
    assert system.startswith("CUSTOM ## get_weather") and emulator.marker.open_tag in system


def test_the_final_history_round_trips() -> None:
    """What the client stores from our answer is parsed back the same on the next turn."""
    result = run_emulator(make_request(), FakeUpstream(answer("Checking.\n" + WEATHER)))
    calls = [ToolCall(c["id"], c["name"], c["arguments"]) for c in result.calls]
    history = [
        Message(role="user", content="Weather?"),
        Message(role="assistant", content=result.text, tool_calls=calls),
        Message(role="tool", tool_call_id=calls[0].id, content="sunny"),
    ]
    emulator = ToolEmulator(make_request(messages=history), ToolSettings(), rng=random.Random(1))
    sent = emulator.upstream_request().messages
    assert parse_reply(sent[2].text, emulator.marker).calls[0].name == "get_weather"
    assert emulator.marker.result_open("get_weather", calls[0].id) in sent[3].text


def test_calls_to_unoffered_tools_still_made_after_the_repair_are_dropped() -> None:
    """No client can run a tool it did not offer (the OpenAI Agents SDK raises on one): after the repair
    rounds such calls are left out; valid calls beside them, and the prose before them, are kept."""
    made_up = M.render_call("get_forecast", {"city": "Paris"})
    alone = "Let me look.\n" + made_up
    upstream = FakeUpstream(answer(alone), answer(alone))
    result = run_emulator(make_request(), upstream)
    assert "no tool named 'get_forecast'" in upstream.requests[1].messages[-1].text  # it was shown the error first
    assert result.calls == [] and result.text == "Let me look." and result.finish == "stop"
    assert not any(isinstance(e, ToolCallDelta) for e in result.events)

    both = "Both.\n" + made_up + "\n" + WEATHER
    result = run_emulator(make_request(), FakeUpstream(answer(both), answer(both)))
    assert result.parsed_calls == [("get_weather", {"city": "Paris"})] and result.finish == "tool_calls"


def test_a_required_call_made_only_to_unoffered_tools_is_declined_naming_them() -> None:
    made_up = "Sure.\n" + M.render_call("get_forecast", {"city": "Paris"})
    with pytest.raises(ToolCallDeclined) as declined:
        run_emulator(make_request(tool_choice=ToolChoice(mode="required")), FakeUpstream(answer(made_up), answer(made_up)))
    assert "did not offer ('get_forecast')" in declined.value.message


def test_nan_or_infinity_in_a_call_is_repaired_never_passed_on() -> None:
    """`NaN` is Python's, not JSON: JavaScript clients and Anthropic's `input` refuse it (it became `{}`)."""
    bad = "x\n" + M.open_tag + '\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": NaN}}\n' + M.close_tag
    upstream = FakeUpstream(answer(bad), answer("x\n" + WEATHER))
    result = run_emulator(make_request(), upstream)
    assert "NaN is not a JSON number" in upstream.requests[1].messages[-1].text
    assert result.parsed_calls == [("get_weather", {"city": "Paris"})]
    assert "NaN" not in json.dumps(result.calls)
