"""What real clients and real upstreams get wrong: never a 500, never a traceback, never a fake 200.

Malformed requests get a 400 naming the field; an upstream that answers 200 with something that
is not a chat answer, or breaks off a non-streamed answer midway, gets a 502/504 naming it; a
client that leaves before its answer is ready cancels the upstream request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import openai
import orjson
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator

MODEL = "MBZUAI-IFM/K2-Think-v2"
HI = [{"role": "user", "content": "hi"}]
BODY = orjson.dumps({"model": MODEL, "messages": HI})


def _envelope(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    return body["error"]  # type: ignore[no-any-return]


def _no_internal_errors(gw: GatewayServer) -> None:
    assert "unexpected error" not in gw.logs.text and "Traceback" not in gw.logs.text


# --- malformed requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,content_type,status,param",
    [
        (b'{"model":"' + MODEL.encode() + b'","messages":[{"role":"user","content":"caf\xe9"}]}', "application/json", 400, None),
        (b"model=x&messages=y", "application/x-www-form-urlencoded", 400, None),
        (b"", "application/json", 400, None),
        (b"[1, 2]", "application/json", 400, None),
        (BODY, "text/plain", 200, None),  # curl users forget the header; the body is still JSON
        (BODY[:-1] + b',"max_tokens":' + b"9" * 40 + b"}", "application/json", 400, "max_tokens"),
        (BODY[:-1] + b',"temperature":"hot"}', "application/json", 400, "temperature"),
        (BODY[:-1] + b',"n":3}', "application/json", 400, "n"),
        (b'{"model":"' + MODEL.encode() + b'","messages":[]}', "application/json", 400, "messages"),
        (b'{"model":"' + MODEL.encode() + b'","messages":[{"role":"user","content":null}]}', "application/json", 400,
         "messages[0].content"),
        (b'{"model":"' + MODEL.encode() + b'","messages":[{"role":"user","content":{"text":"hi"}}]}', "application/json",
         400, "messages[0].content"),
    ],
)
def test_malformed_requests_get_the_envelope(
    k2_gateway: Callable[..., GatewayServer], body: bytes, content_type: str, status: int, param: str | None,
) -> None:
    gw = k2_gateway(guest=True)
    with gw.http() as http:
        response = http.post("/v1/chat/completions", content=body, headers={"content-type": content_type})
    assert response.status_code == status
    if status != 200:
        error = _envelope(response)
        assert error["type"] == "invalid_request_error" and error["param"] == param
    _no_internal_errors(gw)


def test_what_the_sdk_sends_in_its_many_forms_is_served(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    client = k2_gateway(guest=True).openai()
    reply = client.chat.completions.create(
        model=MODEL, n=1, seed=3, max_tokens=2**31 - 1, extra_body={"unknown_vendor_field": {"x": 1}},
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": " part"}]},
            {"role": "assistant", "content": None},  # type: ignore[typeddict-item]
            {"role": "user", "content": ""},
        ],
    )
    assert reply.choices[0].message.content
    sent = k2emu.requests_to("/api/guest/chat/completions")[-1].json
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][1]["content"] == "first part" and sent["params"]["max_tokens"] == 2**31 - 1
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=HI, n=2)  # type: ignore[arg-type]
    assert caught.value.param == "n"


def _chunked(body: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_body_limit_holds_without_a_content_length(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True, max_request_bytes=1000)
    big = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * 5000 + b'"}]}'
    with gw.http() as http:
        response = http.post("/v1/chat/completions", content=_chunked(big, 512), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and _envelope(response)["code"] == "request_too_large"


def test_unknown_model_retrieve_is_404(k2_gateway: Callable[..., GatewayServer]) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        k2_gateway(guest=True).openai().models.retrieve("no-such/model")
    assert caught.value.code == "model_not_found" and "no-such/model" in caught.value.message


# --- upstreams that answer 200 with something that is not an answer ---------------------------

GARBAGE = [
    pytest.param(b"<!DOCTYPE html><html><body>Checking your browser</body></html>", "text/html", "HTML page", id="html-page"),
    pytest.param(b"", "text/event-stream", "", id="empty-stream"),
    pytest.param(b'data: {"choices":["x"]}\n\n', "text/event-stream", "", id="choice-not-an-object"),
    pytest.param(b'data: {"choices":[{"delta":"x"}]}\n\n', "text/event-stream", "", id="delta-not-an-object"),
    pytest.param(b'{"choices":[{"message":"x"}]}', "application/json", "", id="message-not-an-object"),
    pytest.param(b'{"object":"chat.completion"}', "application/json", "", id="json-without-choices"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("body,content_type,words", GARBAGE)
def test_k2think_garbage_is_a_502(
    k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool, body: bytes, content_type: str, words: str,
) -> None:
    gw = k2_gateway(max_retries=0)
    k2emu.fail_next(1, status=200, body=body, content_type=content_type)
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": HI, "stream": stream})
    assert response.status_code == 502, response.text
    message = str(_envelope(response)["message"])
    assert message.startswith("k2think upstream") and words in message
    _no_internal_errors(gw)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("body,content_type,words", GARBAGE)
def test_openai_compat_garbage_is_a_502(
    compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer], stream: bool, body: bytes,
    content_type: str, words: str,
) -> None:
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                       k2think_enabled=False, max_retries=0)
    compat_emu.fail_next(1, status=200, body=body, content_type=content_type)
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": HI, "stream": stream})
    assert response.status_code == 502, response.text
    assert str(_envelope(response)["message"]).startswith("openai upstream")
    _no_internal_errors(gw)


def test_openai_compat_chunk_of_the_wrong_shape_midstream_is_an_error_event(
    compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer],
) -> None:
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                       k2think_enabled=False, max_retries=0)
    body = (b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
            b'data: {"choices":[{"delta":{"content":"lo"}}],"usage":{"prompt_tokens":"many"}}\n\n')
    compat_emu.fail_next(1, status=200, body=body, content_type="text/event-stream")
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": HI, "stream": True})
    events = [e for e in response.text.split("\n\n") if e]
    assert response.status_code == 200 and "[DONE]" not in response.text
    error = orjson.loads(events[-1].removeprefix("data: "))["error"]
    assert error["type"] == "upstream_error" and error["message"].startswith("openai upstream")
    _no_internal_errors(gw)


# --- a non-streamed answer that breaks off after it began ---------------------------------------


def test_non_streamed_answer_broken_off_midway_is_a_502(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.shape, k2emu.break_mid_stream, k2emu.interrupt_after_events = "cumulative_details", True, 3
    gw = k2_gateway(guest=True)
    with pytest.raises(openai.APIStatusError) as caught:
        gw.openai().chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    assert "k2think upstream broke off its response" in caught.value.message
    _no_internal_errors(gw)


def test_non_streamed_answer_that_goes_silent_is_a_504(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.shape, k2emu.hang_mid_stream, k2emu.interrupt_after_events, k2emu.hang_seconds = "delta_tags", True, 3, 10
    gw = k2_gateway(guest=True, stream_idle_timeout=0.5)
    started = time.monotonic()
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": HI})
    assert response.status_code == 504 and time.monotonic() - started < 5
    error = _envelope(response)
    assert error["type"] == "timeout_error" and "k2think upstream timed out" in str(error["message"])
    _no_internal_errors(gw)


def test_streamed_answer_that_goes_silent_ends_with_a_timeout_event(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.shape, k2emu.hang_mid_stream, k2emu.interrupt_after_events, k2emu.hang_seconds = "delta_tags", True, 3, 10
    gw = k2_gateway(guest=True, stream_idle_timeout=0.5)
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": HI, "stream": True})
    events = [e for e in response.text.split("\n\n") if e]
    assert response.status_code == 200 and "[DONE]" not in response.text
    assert orjson.loads(events[-1].removeprefix("data: "))["error"]["type"] == "timeout_error"


# --- a client that leaves before its answer is ready -------------------------------------------


def test_client_disconnect_cancels_a_non_streamed_request(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.shape = "delta_tags"
    k2emu.slow_stream(200, 0.05)  # a 20 s answer
    gw = k2_gateway()
    with pytest.raises(openai.APITimeoutError):
        gw.openai(timeout=1.0).chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    assert k2emu.wait_for_disconnect(5.0), "the gateway kept reading a non-streamed answer nobody waits for"
    assert k2emu.completed_streams == 0


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_while_waiting_for_the_first_byte_cancels_the_upstream(
    k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool,
) -> None:
    k2emu.delay_first_byte = 20
    gw = k2_gateway(request_timeout=30)
    with gw.http() as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json={"model": MODEL, "messages": HI, "stream": stream}, timeout=1.0)
    assert k2emu.wait_for_disconnect(5.0), "the gateway kept waiting on the upstream after the client left"
    _no_internal_errors(gw)


def test_an_unreachable_proxy_is_named_as_such(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gw = k2_gateway(proxy_url=f"http://127.0.0.1:{port}", max_retries=0)
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": HI})
    assert response.status_code == 502
    message = str(_envelope(response)["message"])
    assert message.startswith("k2think upstream unreachable") and "PROXY_URL" in message
    assert not k2emu.chat_requests
