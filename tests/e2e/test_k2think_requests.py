"""What reaches K2Think: endpoint, headers, body, history, parameters, images."""

from __future__ import annotations

from collections.abc import Callable

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator

MODEL = "MBZUAI-IFM/K2-Think-v2"


def test_token_mode_request_shape(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    token = k2emu.mint_token()
    gw = start_gateway(k2think_base_url=k2emu.base_url, k2think_token=token)
    gw.openai().chat.completions.create(
        model=MODEL, temperature=0.3, max_tokens=77, top_p=0.9, stop=["END"],
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]},
        ],
    )
    request = k2emu.requests_to("/api/chat/completions")[-1]
    assert request.headers["Authorization"] == f"Bearer {token}"
    assert f"token={token}" in request.headers["Cookie"]
    assert request.headers["Origin"] == k2emu.base_url
    assert request.headers["Referer"].startswith(k2emu.base_url)
    assert "Mozilla/5.0" in request.headers["User-Agent"]
    body = request.json
    assert body["stream"] is True and body["model"] == MODEL
    assert not {"chat_id", "id", "session_id"} & set(body)
    assert body["params"] == {"temperature": 0.3, "max_tokens": 77, "top_p": 0.9, "stop": ["END"]}
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert body["messages"][3]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def test_guest_mode_when_no_token(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(k2think_base_url=k2emu.base_url)
    reply = gw.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello! How can I help you today?"
    request = k2emu.requests_to("/api/guest/chat/completions")[-1]
    assert "Authorization" not in request.headers
    assert not k2emu.requests_to("/api/chat/completions")
    health = gw.http().get("/health").json()
    assert health["providers"]["k2think"]["mode"] == "guest"


def test_k2think_api_url_overrides_the_chat_endpoint_only(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(
        k2think_base_url="http://127.0.0.1:9", k2think_api_url=k2emu.url("/api/chat/completions"),
        k2think_token=k2emu.mint_token(),
    )
    reply = gw.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content


def test_upstream_model_is_configurable(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.models = {"MBZUAI-IFM/K2-Think-v3"}
    gw = k2_gateway(k2think_upstream_model="MBZUAI-IFM/K2-Think-v3")
    gw.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert k2emu.last_request is not None and k2emu.last_request.json["model"] == "MBZUAI-IFM/K2-Think-v3"


def test_transient_upstream_failure_is_retried(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True)
    k2emu.fail_next(2, status=502)
    reply = gw.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello! How can I help you today?"
    assert len(k2emu.requests_to("/api/guest/chat/completions")) == 3
