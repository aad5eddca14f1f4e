"""Every error case: right status, OpenAI envelope, clear message, never a 500 or a fake 200."""

from __future__ import annotations

import gzip
import socket
import time
import zlib
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator

MODEL = "MBZUAI-IFM/K2-Think-v2"
HI = [{"role": "user", "content": "hi"}]


def _envelope(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    return body["error"]  # type: ignore[no-any-return]


def _post(gw: GatewayServer, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    with gw.http() as http:
        return http.post("/v1/chat/completions", content=content, headers={"content-type": "application/json", **(headers or {})})


def test_malformed_json(k2_gateway: Callable[..., GatewayServer]) -> None:
    response = _post(k2_gateway(guest=True), b'{"model": ')
    assert response.status_code == 400
    assert _envelope(response)["type"] == "invalid_request_error"


def test_invalid_field_is_named(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True)
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai().chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}])  # type: ignore[misc, list-item]
    assert caught.value.param == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai().chat.completions.create(model=MODEL, messages=HI, temperature=9)  # type: ignore[arg-type]
    assert caught.value.param == "temperature" and "temperature" in caught.value.message


def test_unknown_model(k2_gateway: Callable[..., GatewayServer]) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        k2_gateway(guest=True).openai().chat.completions.create(model="gpt-9", messages=HI)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_found" and "gpt-9" in caught.value.message


def test_keys(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True, valid_api_key="key-one,key-two")
    body = b'{"model":"MBZUAI-IFM/K2-Think-v2","messages":[{"role":"user","content":"hi"}]}'
    with httpx.Client(base_url=gw.base_url) as http:
        missing = http.post("/v1/chat/completions", content=body)
        wrong = http.post("/v1/chat/completions", content=body, headers={"Authorization": "Bearer nope"})
        by_bearer = http.post("/v1/chat/completions", content=body, headers={"Authorization": "Bearer key-two"})
        by_x_api_key = http.post("/v1/chat/completions", content=body, headers={"x-api-key": "key-one"})
        models = http.get("/v1/models")
    assert missing.status_code == wrong.status_code == models.status_code == 401
    assert _envelope(missing)["type"] == "invalid_request_error"
    assert _envelope(wrong)["code"] == "invalid_api_key"
    assert by_bearer.status_code == by_x_api_key.status_code == 200
    with pytest.raises(openai.AuthenticationError):
        gw.openai(api_key="wrong").chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]


def test_body_too_large(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True, max_request_bytes=1000)
    response = _post(gw, b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * 2000 + b'"}]}')
    assert response.status_code == 413
    assert _envelope(response)["code"] == "request_too_large"


def test_a_compressed_body_is_decoded_within_the_limit_and_an_unknown_encoding_is_a_415(
        k2_gateway: Callable[..., GatewayServer]) -> None:
    """Clients that gzip their bodies get answers, not "not valid JSON"; a gzip bomb is a 413 at
    the limit on what it decodes to; an encoding the gateway cannot decode is named in a 415."""
    gw = k2_gateway(guest=True, max_request_bytes=100_000)
    body = f'{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}]}}'.encode()
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = deflater.compress(body) + deflater.flush()
    for encoding, content in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body)),
                              ("deflate", raw_deflate), ("identity", body)):
        answer = _post(gw, content, {"Content-Encoding": encoding})
        assert answer.status_code == 200, (encoding, answer.text)
        assert answer.json()["choices"][0]["message"]["content"]
    bomb = gzip.compress(b'{"model":"m","messages":[{"role":"user","content":"' + b"a" * 50_000_000 + b'"}]}')
    assert len(bomb) < 100_000
    too_big = _post(gw, bomb, {"Content-Encoding": "gzip"})
    assert too_big.status_code == 413 and _envelope(too_big)["code"] == "request_too_large"
    broken = _post(gw, b"not gzip at all", {"Content-Encoding": "gzip"})
    assert broken.status_code == 400 and _envelope(broken)["code"] == "invalid_body_encoding"
    unknown = _post(gw, body, {"Content-Encoding": "br"})
    assert unknown.status_code == 415 and _envelope(unknown)["code"] == "unsupported_content_encoding"
    assert "'br'" in str(_envelope(unknown)["message"])
    with gw.http() as http:
        anthropic = http.post("/v1/messages", headers={"Content-Encoding": "gzip"}, content=gzip.compress(
            f'{{"model":"{MODEL}","max_tokens":50,"messages":[{{"role":"user","content":"hi"}}]}}'.encode()))
    assert anthropic.status_code == 200 and anthropic.json()["content"][0]["text"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_upstream_unreachable(start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(k2think_base_url=f"http://127.0.0.1:{_closed_port()}", max_retries=1)
    response = _post(gw, b'{"model":"MBZUAI-IFM/K2-Think-v2","messages":[{"role":"user","content":"hi"}]}')
    assert response.status_code == 502
    error = _envelope(response)
    assert "k2think" in str(error["message"]) and "unreachable" in str(error["message"])


def test_upstream_timeout(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.delay_first_byte = 3
    gw = k2_gateway(guest=True, request_timeout=0.5, max_retries=0)
    started = time.monotonic()
    response = _post(gw, b'{"model":"MBZUAI-IFM/K2-Think-v2","messages":[{"role":"user","content":"hi"}]}')
    assert response.status_code == 504 and time.monotonic() - started < 2.5
    assert "timed out" in str(_envelope(response)["message"])


def test_request_timeout_does_not_cut_a_healthy_slow_stream(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.slow_stream(8, 0.2)  # 1.6 s of streaming, longer than REQUEST_TIMEOUT
    gw = k2_gateway(guest=True, request_timeout=0.5)
    chunks = list(gw.openai().chat.completions.create(model=MODEL, messages=HI, stream=True))  # type: ignore[arg-type]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_silence_after_the_headers_is_bounded_by_the_idle_timeout_not_the_request_timeout(
    k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]
) -> None:
    k2emu.slow_stream(3, 1.2)  # headers and a first event at once, then 1.2 s pauses
    gw = k2_gateway(guest=True, request_timeout=0.5, stream_idle_timeout=5)
    for stream in (True, False):
        reply = gw.openai().chat.completions.create(model=MODEL, messages=HI, stream=stream)  # type: ignore[call-overload]
        finish = list(reply)[-1].choices[0].finish_reason if stream else reply.choices[0].finish_reason
        assert finish == "stop"


@pytest.mark.parametrize("status", [500, 503])
def test_upstream_failing(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], status: int) -> None:
    k2emu.fail_next(10, status=status)
    gw = k2_gateway(guest=True, max_retries=2)
    response = _post(gw, b'{"model":"MBZUAI-IFM/K2-Think-v2","messages":[{"role":"user","content":"hi"}]}')
    error = _envelope(response)
    if status == 503:  # overloaded, not broken: OpenAI's own 503, with a time to come back
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert (error["type"], error["code"]) == ("service_unavailable_error", "server_is_overloaded")
    else:
        assert response.status_code == 502 and "Retry-After" not in response.headers
    message = str(error["message"])
    assert "k2think" in message and str(status) in message and "3 attempts" in message


def test_upstream_rate_limit_passes_retry_after(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.fail_next(10, status=429, headers={"Retry-After": "7"})
    gw = k2_gateway(guest=True, max_retries=1)
    response = _post(gw, b'{"model":"MBZUAI-IFM/K2-Think-v2","messages":[{"role":"user","content":"hi"}]}')
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"


def test_midstream_failure_ends_with_an_error_event(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.shape, k2emu.break_mid_stream, k2emu.interrupt_after_events = "delta_tags", True, 3
    gw = k2_gateway()
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": HI, "stream": True})
    assert response.status_code == 200
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1].startswith('data: {"error":') and "[DONE]" not in response.text
    with pytest.raises(openai.APIError):
        list(gw.openai().chat.completions.create(model=MODEL, messages=HI, stream=True))  # type: ignore[arg-type]


def test_client_disconnect_cancels_the_upstream(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.shape = "delta_tags"
    k2emu.slow_stream(200, 0.05)
    gw = k2_gateway()
    stream = gw.openai().chat.completions.create(model=MODEL, messages=HI, stream=True)  # type: ignore[arg-type]
    next(iter(stream))
    stream.close()
    assert k2emu.wait_for_disconnect(5.0), "the gateway kept reading from the upstream after the client left"


def test_wrong_method_and_route(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True)
    with gw.http() as http:
        assert http.get("/v1/chat/completions").status_code == 405
        assert _envelope(http.get("/v1/nothing-here"))["code"] == "not_found"
