"""The contract every provider keeps, run against each provider's emulator through the real gateway.

Same streaming, error and tool-call behaviour whatever the upstream: the official `openai` SDK
must not be able to tell which provider answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.providers.contract import HARNESSES, ProviderHarness, StartGateway

HI = [{"role": "user", "content": "Say hello."}]
TOOLS: list[dict[str, Any]] = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[ProviderHarness]:
    with HARNESSES[request.param]() as made:
        yield made


def test_non_streamed_answer(harness: ProviderHarness, start_gateway: StartGateway) -> None:
    harness.answer("Hello from the contract.")
    reply = harness.start(start_gateway).openai().chat.completions.create(model=harness.model, messages=HI)
    assert reply.choices[0].message.content == "Hello from the contract."
    assert reply.choices[0].finish_reason == "stop" and reply.model == harness.model
    assert reply.id.startswith("chatcmpl-") and reply.usage is not None and reply.usage.completion_tokens > 0


def test_streamed_answer_with_usage(harness: ProviderHarness, start_gateway: StartGateway) -> None:
    harness.answer("Hello from the contract, streamed.")
    client = harness.start(start_gateway).openai()
    chunks = list(client.chat.completions.create(model=harness.model, messages=HI, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the contract, streamed."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_a_5xx_before_the_first_byte_is_retried(harness: ProviderHarness, start_gateway: StartGateway) -> None:
    harness.answer("Recovered.")
    gateway = harness.start(start_gateway)
    harness.fail(503)
    reply = gateway.openai().chat.completions.create(model=harness.model, messages=HI)
    assert reply.choices[0].message.content == "Recovered."
    assert harness.chat_requests() == 2


def test_an_upstream_that_keeps_failing_is_a_502_in_the_openai_envelope(harness: ProviderHarness, start_gateway: StartGateway) -> None:
    gateway = harness.start(start_gateway)
    harness.fail(500, times=10)
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(model=harness.model, messages=HI)
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "upstream_error" and "HTTP 500" in body["message"]


CHALLENGE_PAGE = ('<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title></head>'
                  '<body>Enable JavaScript and cookies to continue</body></html>')


def test_a_firewall_challenge_page_is_a_502_naming_it_that_blames_no_credential(
        harness: ProviderHarness, start_gateway: StartGateway) -> None:
    harness.answer("Through.")
    gateway = harness.start(start_gateway)
    harness.emulator.fail_next(10, 403, CHALLENGE_PAGE, {"cf-mitigated": "challenge"}, "text/html")
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(model=harness.model, messages=HI)
    body = caught.value.body
    assert caught.value.status_code == 502 and isinstance(body, dict)
    assert "firewall/bot challenge page (HTTP 403)" in body["message"]
    entries = [entry for pool in gateway.runtime.pools.values() for entry in pool.entries]
    assert [(e.disabled, e.failures, e.refreshing) for e in entries] == [(False, 0, False)] * len(entries)
    harness.emulator.clear_failures()
    assert gateway.openai().chat.completions.create(model=harness.model, messages=HI).choices[0].message.content == "Through."


def test_a_stream_broken_midway_ends_with_an_in_band_error_or_as_truncated(
    harness: ProviderHarness, start_gateway: StartGateway,
) -> None:
    """Never as a whole answer: an in-band error, or (where the upstream's notes say so) finish "length"."""
    harness.answer("A long answer " * 20)
    gateway = harness.start(start_gateway)
    harness.break_midway()
    with httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=30) as http:
        response = http.post("/v1/chat/completions", json={"model": harness.model, "messages": HI, "stream": True})
    assert response.status_code == 200
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    if harness.cut_off_finish is None:
        assert "[DONE]" not in events
        assert "error" in json.loads(events[-1])
    else:
        assert events[-1] == "[DONE]"
        finishes = [c["choices"][0]["finish_reason"] for c in map(json.loads, events[:-1]) if c.get("choices")]
        assert finishes[-1] == harness.cut_off_finish


def test_a_tool_call_and_the_answer_after_its_result(harness: ProviderHarness, start_gateway: StartGateway) -> None:
    harness.call_tool("get_weather", {"city": "Paris"}, then="It is sunny in Paris.")
    client = harness.start(start_gateway).openai()
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=harness.model, messages=messages, tools=TOOLS)
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    second = client.chat.completions.create(model=harness.model, messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "It is sunny in Paris."


def test_a_streamed_tool_call_arrives_as_openai_streams_it(harness: ProviderHarness, start_gateway: StartGateway) -> None:
    harness.call_tool("get_weather", {"city": "Paris"}, then="unused")
    client = harness.start(start_gateway).openai()
    with client.chat.completions.stream(model=harness.model, messages=[{"role": "user", "content": "Weather?"}],
                                        tools=TOOLS) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.id and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert final.choices[0].finish_reason == "tool_calls"
