"""What our side of the wire looks like to the official SDKs (shared/protocols/wire-formats.md),
where an upstream's own shape would otherwise leak through: tool-call ordinals and ids, the finish
reason, cache figures, the first chunk, overloaded upstreams, Anthropic clients' errors on
`/v1/models`, `max_tokens: 0` and `tool_reference` results.

Odd upstream answers are scripted as whole bodies (`fail_next` with status 200), exactly as the
upstream would send them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import orjson
import pytest

from tests.harness import GatewayServer
from tests.upstreams import OpenAICompatEmulator

MODEL = "fake-model"
HI: list[Any] = [{"role": "user", "content": "hi"}]
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
CHAT_PATH = "/v1/chat/completions"


@pytest.fixture
def gateway(compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> Callable[..., GatewayServer]:
    def start(**overrides: Any) -> GatewayServer:
        values: dict[str, Any] = {"openai_compat_base_url": compat_emu.base_url + "/v1", "k2think_enabled": False,
                                  "openai_compat_models": MODEL}
        values.update(overrides)
        return start_gateway(**values)

    return start


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        out["usage"] = usage
    return out


def _upstream_streams(emulator: OpenAICompatEmulator, chunks: list[dict[str, Any]], times: int = 1) -> None:
    """The next `times` answers are this stream, byte for byte."""
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    emulator.fail_next(times, status=200, body=body, content_type="text/event-stream")


def _calls(*calls: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": list(calls)}


# An upstream numbering its calls from 1 (as a content-block index would), naming the first call's id late.
CALLS_FROM_ONE = [
    _chunk({"role": "assistant", "content": None}),
    _chunk(_calls({"index": 1, "type": "function", "function": {"name": "get_weather", "arguments": ""}})),
    _chunk(_calls({"index": 1, "id": "call_named_late", "function": {"arguments": '{"city":'}})),
    _chunk(_calls({"index": 1, "function": {"arguments": '"Paris"}'}})),
    _chunk(_calls({"index": 2, "id": "call_second", "type": "function", "function": {"name": "get_time", "arguments": "{}"}})),
    _chunk({}, "tool_calls"),
]


def test_the_stream_helper_accumulates_calls_an_upstream_numbered_from_one(
    compat_emu: OpenAICompatEmulator, gateway: Callable[..., GatewayServer]
) -> None:
    _upstream_streams(compat_emu, CALLS_FROM_ONE)
    client = gateway().openai()
    with client.chat.completions.stream(model=MODEL, messages=HI, tools=TOOLS) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"} and calls[1].function.arguments == "{}"
    assert calls[0].id.startswith("call_") and len(calls[0].id) > 20 and calls[1].id == "call_second"
    assert final.choices[0].finish_reason == "tool_calls"


def test_each_call_is_numbered_by_ordinal_and_named_once_with_an_id(
    compat_emu: OpenAICompatEmulator, gateway: Callable[..., GatewayServer]
) -> None:
    _upstream_streams(compat_emu, CALLS_FROM_ONE)
    chunks = list(gateway().openai().chat.completions.create(model=MODEL, messages=HI, tools=TOOLS, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert [d.index for d in deltas] == [0, 0, 0, 1, 1]
    heads = [d for d in deltas if d.id is not None]
    assert [(d.index, d.type, d.function.name, d.function.arguments) for d in heads] == [
        (0, "function", "get_weather", ""), (1, "function", "get_time", "")]
    assert heads[0].id and heads[0].id.startswith("call_") and heads[1].id == "call_second"
    for later in (d for d in deltas if d.id is None):  # fragments only: nothing the SDK would concatenate twice
        assert later.type is None and later.function is not None and later.function.name is None
    assert "".join(d.function.arguments or "" for d in deltas if d.index == 0) == '{"city":"Paris"}'


def _upstream_answers(emulator: OpenAICompatEmulator, message: dict[str, Any], finish: str, times: int = 1) -> None:
    """The next `times` non-streamed answers are this completion."""
    emulator.fail_next(times, status=200, body={
        "id": "chatcmpl-upstream", "object": "chat.completion", "created": 1, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}})


def test_calls_without_ids_get_unique_ones(compat_emu: OpenAICompatEmulator, gateway: Callable[..., GatewayServer]) -> None:
    nameless = [{"type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]
    _upstream_answers(compat_emu, {"content": None, "tool_calls": nameless}, "tool_calls", times=2)
    client = gateway().openai()
    ids = []
    for _ in range(2):  # two turns of one conversation: a client keys each result by its call's id
        reply = client.chat.completions.create(model=MODEL, messages=HI, tools=TOOLS)
        calls = reply.choices[0].message.tool_calls
        assert calls is not None and [c.function.name for c in calls] == ["get_time", "get_weather"]
        ids += [c.id for c in calls]
    assert all(i.startswith("call_") and len(i) == 29 for i in ids) and len(set(ids)) == 4


@pytest.mark.parametrize("stream", [False, True])
def test_the_finish_reason_says_what_was_sent(stream: bool, compat_emu: OpenAICompatEmulator,
                                              gateway: Callable[..., GatewayServer]) -> None:
    call = {"id": "call_a", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    client = gateway().openai()
    reasons = []
    for message, upstream_says in (({"content": None, "tool_calls": [call]}, "stop"), ({"content": "No call."}, "tool_calls")):
        if stream:
            delta: dict[str, Any] = {"tool_calls": [{"index": 0, **call}]} if "tool_calls" in message else message
            _upstream_streams(compat_emu, [_chunk(delta), _chunk({}, upstream_says)])
            chunks = list(client.chat.completions.create(model=MODEL, messages=HI, tools=TOOLS, stream=True))
            reasons.append([c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason])
        else:
            _upstream_answers(compat_emu, message, upstream_says)
            reasons.append([client.chat.completions.create(model=MODEL, messages=HI, tools=TOOLS).choices[0].finish_reason])
    assert reasons == [["tool_calls"], ["stop"]]


def test_cached_prompt_tokens_are_reported_when_the_upstream_knows_them(
    compat_emu: OpenAICompatEmulator, gateway: Callable[..., GatewayServer]
) -> None:
    compat_emu.usage = {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55,
                        "prompt_tokens_details": {"cached_tokens": 40}}
    client = gateway().openai()
    reply = client.chat.completions.create(model=MODEL, messages=HI)
    assert reply.usage is not None and reply.usage.prompt_tokens == 50
    assert reply.usage.prompt_tokens_details is not None and reply.usage.prompt_tokens_details.cached_tokens == 40
    chunks = list(client.chat.completions.create(model=MODEL, messages=HI, stream=True,
                                                 stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 40
    compat_emu.usage = {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}
    unknown = client.chat.completions.create(model=MODEL, messages=HI)
    assert unknown.usage is not None and unknown.usage.prompt_tokens_details is None  # not known: not made up


def test_the_first_chunk_and_the_message_have_every_key_openai_sends(gateway: Callable[..., GatewayServer]) -> None:
    gw = gateway()
    with gw.http() as http:
        response = http.post(CHAT_PATH, json={"model": MODEL, "messages": HI, "stream": True})
    first = orjson.loads(response.text.split("\n\n")[0].removeprefix("data: "))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    message = gw.openai().chat.completions.create(model=MODEL, messages=HI).choices[0].message
    assert message.refusal is None and message.annotations == []


def test_a_call_that_opens_the_answer_carries_role_content_and_refusal(
    compat_emu: OpenAICompatEmulator, gateway: Callable[..., GatewayServer]
) -> None:
    _upstream_streams(compat_emu, [_chunk(_calls({"index": 0, "id": "call_a", "type": "function",
                                                  "function": {"name": "get_time", "arguments": "{}"}})),
                                   _chunk({}, "tool_calls")])
    with gateway().http() as http:
        response = http.post(CHAT_PATH, json={"model": MODEL, "messages": HI, "stream": True, "tools": TOOLS})
    first = orjson.loads(response.text.split("\n\n")[0].removeprefix("data: "))["choices"][0]["delta"]
    assert {k: first[k] for k in ("role", "content", "refusal")} == {"role": "assistant", "content": None, "refusal": None}


# -- an overloaded upstream -------------------------------------------------------------------


def test_an_overloaded_upstream_is_a_503_or_529_with_a_retry_after(
    compat_emu: OpenAICompatEmulator, gateway: Callable[..., GatewayServer]
) -> None:
    compat_emu.fail_next(10, status=503)  # no Retry-After: the gateway's own default
    gw = gateway(max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        gw.openai().chat.completions.create(model=MODEL, messages=HI)
    error = raised.value
    assert error.status_code == 503 and error.type == "service_unavailable_error" and error.code == "server_is_overloaded"
    assert error.response.headers["retry-after"] == "5"
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        gw.anthropic().messages.create(model=MODEL, max_tokens=16, messages=HI)
    assert overloaded.value.status_code == 529 and overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert overloaded.value.response.headers["retry-after"] == "5"


def test_an_overloaded_upstreams_retry_after_is_passed_on(
    compat_emu: OpenAICompatEmulator, gateway: Callable[..., GatewayServer]
) -> None:
    """Needs `providers.base.classify_http_error` to keep a 5xx's Retry-After (as it does for 429)."""
    compat_emu.fail_next(10, status=503, headers={"Retry-After": "7"})
    gw = gateway(max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        gw.openai().chat.completions.create(model=MODEL, messages=HI)
    assert raised.value.status_code == 503 and raised.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        gw.anthropic().messages.create(model=MODEL, max_tokens=16, messages=HI)
    assert overloaded.value.response.headers["retry-after"] == "7"


# -- Anthropic clients -------------------------------------------------------------------------


def test_a_refused_key_on_models_gets_the_envelope_of_the_clients_api(gateway: Callable[..., GatewayServer]) -> None:
    gw = gateway()
    with pytest.raises(anthropic.AuthenticationError) as refused:
        gw.anthropic(api_key="wrong-key").models.list()
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["request_id"] == refused.value.response.headers["request-id"]
    with pytest.raises(openai.AuthenticationError) as openai_refused:
        gw.openai(api_key="wrong-key").models.list()
    assert openai_refused.value.code == "invalid_api_key"  # an OpenAI client keeps OpenAI's


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_zero_is_an_empty_answer_without_asking_the_upstream(
    stream: bool, compat_emu: OpenAICompatEmulator, gateway: Callable[..., GatewayServer]
) -> None:
    client = gateway().anthropic()
    if stream:
        with client.messages.stream(model=MODEL, max_tokens=0, messages=HI) as answer:
            assert list(answer.text_stream) == []
            message = answer.get_final_message()
    else:
        message = client.messages.create(model=MODEL, max_tokens=0, messages=HI)
    counted = client.messages.count_tokens(model=MODEL, messages=HI)
    assert message.content == [] and message.stop_reason == "max_tokens" and message.role == "assistant"
    assert message.usage.input_tokens == counted.input_tokens > 0 and message.usage.output_tokens == 0
    assert compat_emu.requests_to(CHAT_PATH) == []
    with pytest.raises(anthropic.NotFoundError):  # still routed: an unknown model is a 404
        client.messages.create(model="no-such-model", max_tokens=0, messages=HI)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=-1, messages=HI)


def _tool_round(result_content: list[dict[str, Any]]) -> list[Any]:
    return [*HI, {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "tool_search",
                                                   "input": {"query": "weather"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": result_content}]}]


def test_a_tool_reference_in_a_tool_result_reaches_the_upstream_as_text_naming_the_tool(
    compat_emu: OpenAICompatEmulator, gateway: Callable[..., GatewayServer]
) -> None:
    client = gateway().anthropic()
    tools: list[Any] = [{"name": "tool_search", "input_schema": {"type": "object", "properties": {}}},
                        {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]
    message = client.messages.create(model=MODEL, max_tokens=64, tools=tools, messages=_tool_round(
        [{"type": "text", "text": "Found one tool."}, {"type": "tool_reference", "tool_name": "get_weather"}]))
    assert message.content[0].text
    sent = compat_emu.last_request
    assert sent is not None
    result = next(m for m in sent.json["messages"] if m["role"] == "tool")
    assert result["tool_call_id"] == "toolu_01" and "Found one tool." in json.dumps(result["content"])
    assert 'tool_reference tool_name=\\"get_weather\\"' in json.dumps(result["content"])
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=MODEL, max_tokens=64, tools=tools, messages=_tool_round([{"type": "tool_reference"}]))
    assert "messages.2.content.0.content.0.tool_name" in bad.value.message
