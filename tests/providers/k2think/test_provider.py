"""K2Think's request body and failure reading, without an upstream."""

from __future__ import annotations

import pytest

from chatbridge.core.errors import FailureKind, UpstreamStatusError
from chatbridge.core.types import ChatRequest, Message
from chatbridge.providers.http import HttpSettings
from chatbridge.providers.k2think.payload import K2ThinkEndpoints, build_body
from chatbridge.providers.k2think.provider import GUEST_REFUSED, K2ThinkConfig, K2ThinkProvider

HI = [Message(role="user", content="hi")]
ENDPOINTS = K2ThinkEndpoints("http://k2.test", "http://k2.test/chat", "http://k2.test/guest", "http://k2.test/signin")


@pytest.mark.parametrize("guest", [False, True])
def test_sampling_parameters_go_in_params_and_at_the_top_level(guest: bool) -> None:
    request = ChatRequest(model="m", messages=HI, temperature=0.2, max_tokens=9, top_p=0.5, stop=["X"], top_k=4)
    body = build_body(request, guest=guest)
    assert body["params"] == {"temperature": 0.2, "max_tokens": 9, "top_p": 0.5, "top_k": 4, "stop": ["X"]}
    assert {k: body.get(k) for k in ("temperature", "max_tokens", "top_p", "stop")} == {
        "temperature": 0.2, "max_tokens": 9, "top_p": 0.5, "stop": ["X"],
    }
    assert "top_k" not in body  # not an OpenAI field: left to Open WebUI, which forwards `params`


def test_no_sampling_parameters_adds_nothing_at_the_top_level() -> None:
    body = build_body(ChatRequest(model="m", messages=HI), guest=True)
    assert body["params"] == {} and set(body) == {"stream", "model", "messages", "params", "features"}


def _provider(guest: bool) -> K2ThinkProvider:
    return K2ThinkProvider(K2ThinkConfig(ENDPOINTS, "m", guest, HttpSettings()))


def _refused(status: int) -> UpstreamStatusError:
    return UpstreamStatusError(f"k2think upstream returned HTTP {status}", provider="k2think", status=status)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_guest_is_not_a_refused_credential(status: int) -> None:
    failure = _provider(guest=True).classify(_refused(status))
    assert failure.kind is FailureKind.AUTH and failure.code == GUEST_REFUSED
    assert "guest access was refused" in failure.message
    assert all(name in failure.message for name in ("K2THINK_TOKEN", "TOKENS_FILE", "ACCOUNTS_FILE"))


def test_a_refused_token_is_a_refused_credential() -> None:
    failure = _provider(guest=False).classify(_refused(401))
    assert failure.kind is FailureKind.AUTH and failure.code is None
