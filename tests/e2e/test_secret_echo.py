"""A configured secret that an upstream echoes back never reaches a client body, an in-band error or a log line.

The upstreams here quote the credential they were sent in full ("Incorrect API key provided:
<key>"), as some servers do. The in-thread gateway's log capture has no redacting filter, so
what it shows proves the messages are clean where they are made; the `chatbridge serve` test
reads what a user's terminal would show.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from tests.harness import API_KEY, GatewayProcess, GatewayServer
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator

HI = [{"role": "user", "content": "hi"}]
WRONG_KEY = "sk-wrong-upstream-key-0123456789abcdef"


def _compat(compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    compat_emu.api_key, compat_emu.echo_key = "sk-the-right-key-000000000000", True
    return start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                         openai_compat_api_key=WRONG_KEY, k2think_enabled=False, max_retries=1)


@pytest.mark.parametrize("stream", [False, True])
def test_an_echoed_upstream_key_is_not_in_the_error_body_or_the_logs(
    compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer], stream: bool,
) -> None:
    gw = _compat(compat_emu, start_gateway)
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": HI, "stream": stream})
    assert response.status_code == 502
    assert "Incorrect API key provided" in response.text  # the upstream's words are kept ...
    assert WRONG_KEY not in response.text  # ... its copy of the key is not
    assert compat_emu.requests_to("/v1/chat/completions")[-1].token == WRONG_KEY  # it was really sent and echoed
    assert WRONG_KEY not in gw.logs.text


def test_an_echoed_key_in_an_in_band_error_is_not_in_the_stream(
    compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer],
) -> None:
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                       openai_compat_api_key=WRONG_KEY, k2think_enabled=False)
    body = (b'data: {"choices":[{"delta":{"content":"Hello"}}]}\n\n'
            + b"data: " + orjson.dumps({"error": {"message": f"key {WRONG_KEY} was revoked mid-answer"}}) + b"\n\n")
    compat_emu.fail_next(1, status=200, body=body, content_type="text/event-stream")
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": HI, "stream": True})
    assert response.status_code == 200 and "Hello" in response.text and "was revoked mid-answer" in response.text
    assert WRONG_KEY not in response.text and WRONG_KEY not in gw.logs.text


def test_an_echoed_k2think_token_is_not_in_the_error_body(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    token = k2emu.mint_token()
    gw = k2_gateway(k2think_token=token, max_retries=0)
    k2emu.fail_next(1, status=401, body={"detail": f"Token {token} has been revoked"})
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": "MBZUAI-IFM/K2-Think-v2", "messages": HI})
    assert response.status_code == 502 and "has been revoked" in response.text
    assert token not in response.text and token not in gw.logs.text


def test_the_serve_command_never_prints_an_echoed_secret(compat_emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    compat_emu.api_key, compat_emu.echo_key = "sk-the-right-key-000000000000", True
    admin_key = "admin-key-0123456789-echoed"
    # An upstream that echoes everything it can see, the client's key included, in its error text.
    compat_emu.fail_next(2, status=500, body={"error": {"message": f"debug: saw {API_KEY} and {admin_key} and {WRONG_KEY}"}})
    env = {"OPENAI_COMPAT_BASE_URL": compat_emu.base_url + "/v1", "OPENAI_COMPAT_API_KEY": WRONG_KEY,
           "OPENAI_COMPAT_MODELS": "fake-model", "K2THINK_ENABLED": "false", "VALID_API_KEY": API_KEY,
           "ADMIN_API_KEY": admin_key, "LOG_LEVEL": "DEBUG", "MAX_RETRIES": "2", "DATA_DIR": str(tmp_path / "data")}
    gateway = GatewayProcess(env, tmp_path).start()
    try:
        bodies = [httpx.post(gateway.base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                             json={"model": "fake-model", "messages": HI, "stream": stream}, timeout=30).text
                  for stream in (False, True)]
    finally:
        gateway.stop()
    output = gateway.output
    assert "debug: saw" in output or "Incorrect API key provided" in output  # the failures were logged ...
    for secret in (API_KEY, admin_key, WRONG_KEY):
        assert secret not in output, secret  # ... without a secret
        assert all(secret not in body for body in bodies), secret
