"""An upstream answering with JSON of the wrong types, seen through the official openai SDK.

Before the first byte that is a 502 naming the upstream; once the answer has begun, an in-band
error naming it; never a 500, never a traceback, and nothing malformed reaches the client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator
from tests.upstreams.common import EmulatorBase

HI = [{"role": "user", "content": "hi"}]

WRONG_DELTAS = [
    pytest.param({"content": {"text": "hi"}}, id="content-object"),
    pytest.param({"content": 42}, id="content-number"),
    pytest.param({"content": ["a", "b"]}, id="content-list-of-strings"),
    pytest.param({"reasoning_content": {"r": 1}}, id="reasoning-object"),
    pytest.param({"tool_calls": [{"index": "0", "id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
                 id="tool-call-index-string"),
    pytest.param({"tool_calls": [{"index": 0, "id": 7, "function": {"name": "f", "arguments": {"a": 1}}}]},
                 id="tool-call-fields-not-strings"),
]


@pytest.fixture(params=["openai", "k2think"])
def upstream(request: pytest.FixtureRequest, compat_emu: OpenAICompatEmulator, k2emu: K2ThinkEmulator,
             start_gateway: Callable[..., GatewayServer]) -> tuple[EmulatorBase, GatewayServer, str, str]:
    if request.param == "openai":
        gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                           k2think_enabled=False, max_retries=0)
        return compat_emu, gw, "fake-model", "openai"
    gw = start_gateway(k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token(), max_retries=0)
    return k2emu, gw, "MBZUAI-IFM/K2-Think-v2", "k2think"


def _sse(*chunks: Any) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _chunk(delta: dict[str, Any]) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def _message(error: openai.APIError) -> str:
    """The gateway's own message (the SDK prefixes its `message` with the status)."""
    body = error.body
    assert isinstance(body, dict), body
    return str(body["message"])


def _clean_logs(gw: GatewayServer) -> None:
    assert "unexpected error" not in gw.logs.text and "Traceback" not in gw.logs.text


@pytest.mark.parametrize("delta", WRONG_DELTAS)
def test_a_wrong_type_in_the_first_chunk_is_a_502_naming_the_upstream(
    upstream: tuple[EmulatorBase, GatewayServer, str, str], delta: dict[str, Any],
) -> None:
    emu, gw, model, name = upstream
    if name == "k2think" and "tool_calls" in delta:
        pytest.skip("K2Think has no native tool calls: the field is not read")
    emu.fail_next(1, status=200, body=_sse(_chunk(delta)), content_type="text/event-stream")
    with pytest.raises(openai.APIStatusError) as caught:
        list(gw.openai().chat.completions.create(model=model, messages=HI, stream=True))  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    assert _message(caught.value).startswith(f"{name} upstream sent data of an unexpected shape")
    _clean_logs(gw)


@pytest.mark.parametrize("delta", WRONG_DELTAS)
def test_a_wrong_type_midstream_is_an_in_band_error_and_never_forwarded(
    upstream: tuple[EmulatorBase, GatewayServer, str, str], delta: dict[str, Any],
) -> None:
    emu, gw, model, name = upstream
    if name == "k2think" and "tool_calls" in delta:
        pytest.skip("K2Think has no native tool calls: the field is not read")
    emu.fail_next(1, status=200, body=_sse(_chunk({"content": "Hello"}), _chunk(delta)), content_type="text/event-stream")
    received: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in gw.openai().chat.completions.create(model=model, messages=HI, stream=True):  # type: ignore[arg-type]
            received.append(chunk)
    assert f"{name} upstream sent data of an unexpected shape" in caught.value.message
    for chunk in received:  # only well-formed deltas arrived
        for choice in chunk.choices:
            assert choice.delta.content is None or isinstance(choice.delta.content, str)
            for call in choice.delta.tool_calls or ():
                assert isinstance(call.index, int)
    said = "".join((c.choices[0].delta.content or "") + (getattr(c.choices[0].delta, "reasoning_content", None) or "")
                   for c in received if c.choices)
    assert "Hello" in said  # K2Think's untagged leading text is reasoning until `</think>`
    _clean_logs(gw)


@pytest.mark.parametrize("message", [
    pytest.param({"role": "assistant", "content": {"text": "hi"}}, id="content-object"),
    pytest.param({"role": "assistant", "content": 3.5}, id="content-number"),
    pytest.param({"role": "assistant", "content": None,
                  "tool_calls": [{"id": "c1", "type": "function", "function": {"name": ["f"], "arguments": "{}"}}]},
                 id="tool-call-name-list"),
])
def test_a_wrong_type_in_a_non_streamed_answer_is_a_502(
    upstream: tuple[EmulatorBase, GatewayServer, str, str], message: dict[str, Any],
) -> None:
    emu, gw, model, name = upstream
    if name == "k2think" and "tool_calls" in message:
        pytest.skip("K2Think has no native tool calls: the field is not read")
    body = {"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    emu.fail_next(1, status=200, body=orjson.dumps(body), content_type="application/json")
    with pytest.raises(openai.APIStatusError) as caught:
        gw.openai().chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code == 502 and _message(caught.value).startswith(f"{name} upstream")
    _clean_logs(gw)


def test_wrong_usage_counts_are_never_forwarded(upstream: tuple[EmulatorBase, GatewayServer, str, str]) -> None:
    emu, gw, model, name = upstream
    usage = {"prompt_tokens": True, "completion_tokens": -5}
    emu.fail_next(1, status=200, body=_sse({**_chunk({"content": "Hi"}), "usage": usage}), content_type="text/event-stream")
    with pytest.raises(openai.APIStatusError) as caught:
        gw.openai().chat.completions.create(model=model, messages=HI, stream=True)  # type: ignore[arg-type]
    assert caught.value.status_code == 502 and _message(caught.value).startswith(f"{name} upstream")
    _clean_logs(gw)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_no_credential_is_blamed(
        upstream: tuple[EmulatorBase, GatewayServer, str, str], status: int) -> None:
    """An upstream pointing elsewhere (here at a "metadata" server) gets no request sent there: a 502
    says where it led (without the query) and the credential serves the next request untouched."""
    emu, gw, model, name = upstream
    with OpenAICompatEmulator() as elsewhere:
        emu.fail_next(status=status, body="", headers={"Location": elsewhere.base_url + "/latest/meta-data/?token=abc"})
        with pytest.raises(openai.APIStatusError) as caught:
            gw.openai().chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]
        assert caught.value.status_code == 502
        message = _message(caught.value)
        assert f"{name} upstream answered HTTP {status}" in message and "/latest/meta-data/" in message
        assert "token=abc" not in message
        assert elsewhere.requests == []
    assert gw.openai().chat.completions.create(model=model, messages=HI).choices[0].message.content  # type: ignore[arg-type]
    if name == "k2think":
        with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {gw.runtime.admin_keys[0]}"}) as http:
            tokens = http.get("/admin/providers/k2think/credentials").json()["data"]["tokens"]
        assert [(t["state"], t["failures"]) for t in tokens] == [("active", 0)]
    _clean_logs(gw)


def _escaped_sse(*contents: str) -> bytes:
    """Chunks as a UTF-16 based server writes them: lone surrogates escaped (`"\\ud83d"`)."""
    return b"".join(b"data: " + json.dumps(_chunk({"content": c})).encode() + b"\n\n" for c in contents) + b"data: [DONE]\n\n"


def test_lone_surrogates_from_an_upstream_become_replacement_characters_not_an_error(
    upstream: tuple[EmulatorBase, GatewayServer, str, str],
) -> None:
    """An emoji split between two events (each half escaped alone) costs that character, not the answer."""
    emu, gw, model, name = upstream
    think = "</think>" if name == "k2think" else ""  # K2Think's text is reasoning until the tag
    emu.fail_next(1, status=200, body=_escaped_sse(f"{think}Hi ", "\ud83d", "\ude00", " there"), content_type="text/event-stream")
    chunks = list(gw.openai().chat.completions.create(model=model, messages=HI, stream=True))  # type: ignore[arg-type]
    said = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert said.endswith("Hi \ufffd\ufffd there") and chunks[-1].choices[0].finish_reason == "stop"
    body = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"{think}a\ud800b"}, "finish_reason": "stop"}]}
    emu.fail_next(1, status=200, body=json.dumps(body).encode(), content_type="application/json")
    answer = gw.openai().chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "a\ufffdb"
    _clean_logs(gw)
