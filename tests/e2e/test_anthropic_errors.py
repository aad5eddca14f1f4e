"""Every error on the Anthropic routes: Anthropic's envelope, types and statuses, never OpenAI's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator

K2 = "MBZUAI-IFM/K2-Think-v2"
HI: list[Any] = [{"role": "user", "content": "hi"}]
BODY = {"model": K2, "max_tokens": 32, "messages": HI}


def envelope(response: httpx.Response, status: int, kind: str) -> str:
    """Checks Anthropic's envelope and returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error", "request_id"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    assert body["request_id"] == response.headers["request-id"]
    assert "Traceback" not in response.text
    return str(body["error"]["message"])


def test_bad_keys_by_x_api_key_and_bearer(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    with pytest.raises(anthropic.AuthenticationError) as caught:
        gw.anthropic(api_key="wrong").messages.create(**BODY)
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        gw.anthropic(auth_token="wrong").messages.create(**BODY)
    assert gw.anthropic(auth_token=gw.api_key).messages.create(**BODY).content  # Claude Code's ANTHROPIC_AUTH_TOKEN
    with httpx.Client(base_url=gw.base_url) as http:
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            envelope(http.post(path, json=BODY), 401, "authentication_error")


def test_bad_bodies_are_400s_naming_the_field(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    cases: list[tuple[bytes | dict[str, Any], str]] = [
        (b'{"model": ', "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"", "empty"),
        ({"model": K2, "messages": HI}, "max_tokens: Field required"),
        ({**BODY, "max_tokens": "5"}, "max_tokens"),
        ({**BODY, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({**BODY, "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}, "unsupported type 'hologram'"),
        ({**BODY, "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
        ({**BODY, "temperature": 3}, "temperature"),
        ({**BODY, "stop_sequences": ["  "]}, "stop_sequences.0"),
        ({**BODY, "tools": [{"name": "bad name!", "input_schema": {"type": "object"}}]}, "tools.0.name"),
        ({**BODY, "tools": [{"name": "t", "input_schema": {"type": "string"}}]}, "tools.0.input_schema"),
        ({**BODY, "tool_choice": {"type": "any"}}, "requires tools"),
        ({**BODY, "thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
        ({**BODY, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}]}, "file sources"),
    ]
    with gw.http() as http:
        for body, expected in cases:
            response = http.post("/v1/messages", **({"content": body} if isinstance(body, bytes) else {"json": body}))
            assert expected in envelope(response, 400, "invalid_request_error"), (body, response.text)
    with pytest.raises(anthropic.BadRequestError):
        gw.anthropic().messages.create(model=K2, max_tokens=8, messages=[])


def test_not_found_model_and_route(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    with pytest.raises(anthropic.NotFoundError) as caught:
        gw.anthropic().messages.create(**{**BODY, "model": "claude-unmapped"})
    assert "claude-unmapped" in caught.value.message
    with gw.http() as http:
        envelope(http.get("/v1/messages/nothing-here"), 404, "not_found_error")
        envelope(http.get("/v1/models/nope", headers={"anthropic-version": "2023-06-01"}), 404, "not_found_error")
        envelope(http.get("/v1/messages"), 405, "invalid_request_error")
        envelope(http.get("/v1/messages/count_tokens"), 405, "invalid_request_error")


def test_request_too_large(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(max_request_bytes=2000)
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 5000}]}
    with gw.http() as http:
        envelope(http.post("/v1/messages", json=big), 413, "request_too_large")
        envelope(http.post("/v1/messages/count_tokens", json=big), 413, "request_too_large")


def test_rate_limit_keeps_retry_after_and_the_upstreams_words(k2emu: K2ThinkEmulator,
                                                              k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.fail_next(10, status=429, headers={"Retry-After": "7"})
    gw = k2_gateway(max_retries=0)
    with gw.http() as http:
        response = http.post("/v1/messages", json=BODY)
    assert "Rate limit exceeded" in envelope(response, 429, "rate_limit_error")
    assert response.headers["retry-after"] == "7"


def test_overloaded_upstream_is_a_529(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.fail_next(10, status=503)
    gw = k2_gateway(max_retries=1)
    with pytest.raises(anthropic.APIStatusError) as caught:
        gw.anthropic().messages.create(**BODY)
    assert caught.value.status_code == 529 and caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert "Service Unavailable" in caught.value.message and "k2think" in caught.value.message


def test_upstream_failure_and_timeout(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.fail_next(10, status=500)
    gw = k2_gateway(max_retries=0, request_timeout=0.5)
    with gw.http() as http:
        assert "Internal Server Error" in envelope(http.post("/v1/messages", json=BODY), 502, "api_error")
        k2emu.clear_failures()
        k2emu.delay_first_byte = 3
        assert "timed out" in envelope(http.post("/v1/messages", json=BODY), 504, "timeout_error")


def test_internal_error_is_an_api_error(k2_gateway: Callable[..., GatewayServer], monkeypatch: pytest.MonkeyPatch) -> None:
    gw = k2_gateway()

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom: a bug")

    monkeypatch.setattr(gw.runtime.pipeline, "open", broken)
    with gw.http() as http:
        message = envelope(http.post("/v1/messages", json=BODY), 500, "api_error")
    assert "boom" not in message and "internal error" in message


def test_failure_mid_stream_is_an_error_event(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.shape, k2emu.break_mid_stream, k2emu.interrupt_after_events = "delta_tags", True, 3
    gw = k2_gateway()
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}  # K2's reasoning is the first event
    with gw.http() as http:
        response = http.post("/v1/messages", json={**BODY, **thinking, "stream": True})
    assert response.status_code == 200
    events = [e for e in response.text.split("\n\n") if e]
    assert events[0].startswith("event: message_start")
    assert events[-1].startswith("event: error\ndata: ") and '"type":"api_error"' in events[-1]
    assert "message_stop" not in response.text
    with pytest.raises(anthropic.APIStatusError) as caught, gw.anthropic().messages.stream(**BODY, **thinking) as stream:
        stream.get_final_message()
    assert caught.value.type == "api_error"  # type: ignore[attr-defined]


def test_no_openai_envelope_on_anthropic_routes(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    with gw.http() as http:
        for response in (http.post("/v1/messages", content=b"{"), http.post("/v1/messages/count_tokens", json={}),
                         http.post("/v1/messages", json=BODY, headers={"Authorization": "Bearer nope"})):
            assert response.json()["type"] == "error" and "param" not in response.json()["error"]
