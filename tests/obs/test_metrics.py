"""`/metrics` through a running gateway: who may scrape it, and figures that move with real traffic."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.harness import GatewayServer
from tests.obs.scrape import label_values, value
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator, Reply

ADMIN_KEY = "sk-admin-test-key-9876543210"
HI = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"


@pytest.fixture
def compat_gateway(compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> Callable[..., GatewayServer]:
    def start(**overrides: object) -> GatewayServer:
        values: dict[str, object] = {"openai_compat_base_url": compat_emu.base_url + "/v1", "k2think_enabled": False,
                                     "admin_api_key": ADMIN_KEY, "max_retries": 2}
        values.update(overrides)
        return start_gateway(**values)

    return start


def scrape(gw: GatewayServer, key: str | None = ADMIN_KEY) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(gw.base_url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")  # the Prometheus text format
    return response.text


def test_metrics_need_the_admin_key(compat_gateway: Callable[..., GatewayServer]) -> None:
    gw = compat_gateway()
    for headers in ({}, {"Authorization": f"Bearer {gw.api_key}"}, {"x-api-key": "sk-wrong-0123456789"}):
        refused = httpx.get(gw.base_url + "/metrics", headers=headers, timeout=10)
        assert refused.status_code == 401
        assert "METRICS_PUBLIC" in refused.json()["error"]["message"]
        assert "chatbridge_requests_total" not in refused.text
    assert "chatbridge_requests_total" in scrape(gw) or "# HELP chatbridge_requests_total" in scrape(gw)
    assert httpx.post(gw.base_url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 405


def test_metrics_public_opens_them_without_a_key(compat_gateway: Callable[..., GatewayServer]) -> None:
    gw = compat_gateway(metrics_public=True)
    assert "# TYPE chatbridge_requests_total counter" in scrape(gw, key=None)
    assert httpx.get(gw.base_url + "/admin/status").status_code == 401  # the admin API stays closed


def test_request_counts_move_with_traffic_for_both_dialects(compat_emu: OpenAICompatEmulator,
                                                            compat_gateway: Callable[..., GatewayServer]) -> None:
    gw = compat_gateway()
    before = scrape(gw)
    client = gw.openai()
    for _ in range(2):
        assert client.chat.completions.create(model="fake-model", messages=HI).choices[0].message.content  # type: ignore[arg-type]
    assert list(client.chat.completions.create(model="fake-model", messages=HI, stream=True))  # type: ignore[arg-type]
    with gw.anthropic().messages.stream(model="fake-model", max_tokens=50, messages=HI) as stream:  # type: ignore[arg-type]
        assert "".join(stream.text_stream)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model-from-a-client-7f3a", messages=HI)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="fake-model", messages=[])
    with pytest.raises(openai.AuthenticationError):
        gw.openai(api_key="sk-not-a-key-0123456789").chat.completions.create(model="fake-model", messages=HI)  # type: ignore[arg-type]
    with pytest.raises(anthropic.NotFoundError):
        gw.anthropic().messages.create(model="nope-model", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    after = scrape(gw)

    def moved(**labels: str) -> float:
        return value(after, "chatbridge_requests_total", **labels) - value(before, "chatbridge_requests_total", **labels)

    ok = dict(route=CHAT, dialect="openai", model="fake-model", provider="openai", status="200")
    assert moved(**ok) == 3  # two whole answers and one stream
    assert moved(route="/v1/messages", dialect="anthropic", model="fake-model", provider="openai", status="200") == 1
    assert moved(route=CHAT, dialect="openai", model="unknown", provider="none", status="404") == 1
    assert moved(route=CHAT, dialect="openai", status="400") == 1
    assert moved(route=CHAT, dialect="openai", model="unknown", status="401") == 1
    assert moved(route="/v1/messages", dialect="anthropic", model="unknown", status="404") == 1
    # A model name a client sent is never a label value; only ids the router knows, or "unknown". (The
    # registry is the process's: other gateways of this test run may have added their own routed ids.)
    labels = label_values(after, "chatbridge_requests_total", "model")
    assert {"fake-model", "unknown"} <= labels and not labels & {"no-such-model-from-a-client-7f3a", "nope-model"}
    assert "no-such-model-from-a-client-7f3a" not in after and "nope-model" not in after

    def hist(name: str, **labels: str) -> float:
        return value(after, name + "_count", **labels) - value(before, name + "_count", **labels)

    assert hist("chatbridge_request_duration_seconds", route=CHAT, dialect="openai", provider="openai") == 3
    assert hist("chatbridge_time_to_first_token_seconds", dialect="openai", provider="openai") == 1  # streams only
    assert hist("chatbridge_time_to_first_token_seconds", dialect="anthropic", provider="openai") == 1


def test_upstream_errors_are_counted_by_failure_class(compat_emu: OpenAICompatEmulator,
                                                      compat_gateway: Callable[..., GatewayServer]) -> None:
    gw = compat_gateway(openai_compat_api_key="sk-upstream-0123456789")
    before = scrape(gw)
    compat_emu.fail_next(1, 500)
    assert gw.openai().chat.completions.create(model="fake-model", messages=HI).choices[0].message.content  # type: ignore[arg-type]
    compat_emu.fail_next(5, 429)
    with pytest.raises(openai.RateLimitError):
        gw.openai().chat.completions.create(model="fake-model", messages=HI)  # type: ignore[arg-type]
    after = scrape(gw)

    def moved(failure: str) -> float:
        name = "chatbridge_upstream_errors_total"
        return value(after, name, provider="openai", failure=failure) - value(before, name, provider="openai", failure=failure)

    assert moved("transient") == 1  # the 500, retried: the client got its answer
    assert moved("rate_limited") >= 1
    assert value(after, "chatbridge_requests_total", route=CHAT, status="429") - value(
        before, "chatbridge_requests_total", route=CHAT, status="429") == 1


def test_credentials_by_state(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{k2emu.mint_token()}\n{k2emu.mint_token()}\n")
    gw = start_gateway(k2think_base_url=k2emu.base_url, tokens_file=tokens, admin_api_key=ADMIN_KEY)
    text = scrape(gw)
    assert value(text, "chatbridge_credentials", provider="k2think", state="active") == 2
    assert value(text, "chatbridge_credentials", provider="k2think", state="disabled") == 0
    assert value(text, "chatbridge_state_store_up") == 1


WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_tool_parse_outcomes(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    """Emulated tools: an answer with arguments that fail the schema (then repaired), and a plain answer."""
    import json
    import re

    def respond(body: dict[str, Any]) -> Reply:
        system = "\n".join(str(m["content"]) for m in body["messages"] if m["role"] == "system")
        token = re.search(r"<tool_call_([A-Za-z0-9]+)>", system).group(1)  # type: ignore[union-attr]
        if "plain" in json.dumps(body["messages"][-1]):
            return Reply(answer="No tool needed.")
        repaired = any(m["role"] == "user" and "required" in str(m["content"]) for m in body["messages"][1:])
        args = {"city": "Paris"} if repaired else {"town": "Paris"}
        return Reply(answer=f"<tool_call_{token}>{json.dumps({'name': 'get_weather', 'arguments': args})}</tool_call_{token}>")

    k2emu.responder = respond
    gw = start_gateway(k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token(), admin_api_key=ADMIN_KEY)
    model = "MBZUAI-IFM/K2-Think-v2"
    before = scrape(gw)
    reply = gw.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": "Weather?"}],
                                                tools=WEATHER)  # type: ignore[arg-type]
    assert reply.choices[0].message.tool_calls
    plain = gw.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": "plain please"}],
                                                tools=WEATHER)  # type: ignore[arg-type]
    assert plain.choices[0].message.content == "No tool needed."
    after = scrape(gw)

    def moved(outcome: str) -> float:
        name = "chatbridge_tool_parses_total"
        return value(after, name, outcome=outcome) - value(before, name, outcome=outcome)

    assert (moved("invalid"), moved("calls"), moved("no_call"), moved("malformed")) == (1, 1, 1, 0)
