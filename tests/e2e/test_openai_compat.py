"""The OpenAI-compatible provider: passthrough, streaming, native tools, errors."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.harness import GatewayServer
from tests.upstreams import OpenAICompatEmulator

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def compat_gateway(compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> Callable[..., GatewayServer]:
    def start(**overrides: object) -> GatewayServer:
        values: dict[str, object] = {"openai_compat_base_url": compat_emu.base_url + "/v1", "k2think_enabled": False}
        values.update(overrides)
        return start_gateway(**values)

    return start


def test_models_are_read_from_the_upstream(compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.models = ["llama3", "qwen2"]
    gw = compat_gateway()
    assert [m.id for m in gw.openai().models.list()] == ["llama3", "qwen2"]


def test_configured_models_win(compat_gateway: Callable[..., GatewayServer]) -> None:
    gw = compat_gateway(openai_compat_models="fake-model, other")
    assert [m.id for m in gw.openai().models.list()] == ["fake-model", "other"]


def test_passthrough_streamed_and_not(compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.answer, compat_emu.reasoning, compat_emu.api_key = "Forty-two.", "Thinking hard.", "upstream-key-abcdef123456"
    gw = compat_gateway(openai_compat_api_key="upstream-key-abcdef123456")
    client = gw.openai()
    reply = client.chat.completions.create(model="fake-model", messages=HI, seed=7, temperature=0.2)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "Forty-two."
    assert reply.choices[0].message.reasoning_content == "Thinking hard."  # type: ignore[attr-defined]
    sent = compat_emu.last_request
    assert sent is not None and sent.json["seed"] == 7 and sent.json["temperature"] == 0.2
    assert sent.headers["Authorization"] == "Bearer upstream-key-abcdef123456"
    chunks = list(client.chat.completions.create(model="fake-model", messages=HI, stream=True))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Forty-two."


def test_native_tools_pass_through(compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.tool_calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    gw = compat_gateway()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    client = gw.openai()
    reply = client.chat.completions.create(model="fake-model", messages=HI, tools=tools, tool_choice="required")  # type: ignore[arg-type]
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert reply.choices[0].finish_reason == "tool_calls"
    sent = compat_emu.last_request
    assert sent is not None and sent.json["tools"][0]["function"]["name"] == "get_weather" and sent.json["tool_choice"] == "required"
    with client.chat.completions.stream(model="fake-model", messages=HI, tools=tools) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]


def test_upstream_key_refused_is_a_502_naming_the_upstream(compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.api_key = "right"
    gw = compat_gateway(openai_compat_api_key="wrong-key-0123456789", openai_compat_models="fake-model")
    with pytest.raises(openai.APIStatusError) as caught:
        gw.openai().chat.completions.create(model="fake-model", messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    assert "openai upstream" in caught.value.message and "wrong-key-0123456789" not in caught.value.message


def test_upstream_rate_limit(compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.fail_next(10, status=429, headers={"Retry-After": "3"})
    gw = compat_gateway(max_retries=0)
    with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {gw.api_key}"}) as http:
        response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": HI})
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_upstream_bad_request_is_the_clients(compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.fail_next(1, status=400, body={"error": {"message": "context too long", "type": "invalid_request_error"}})
    gw = compat_gateway()
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai().chat.completions.create(model="fake-model", messages=HI)  # type: ignore[arg-type]
    assert "context too long" in caught.value.message
    assert len(compat_emu.requests_to("/v1/chat/completions")) == 1  # no retry for the client's fault
