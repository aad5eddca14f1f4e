"""Kimi answers through the gateway, as the `openai` SDK sees them: reasoning, search, notices, pacing,
errors, tools, images, models and guest mode."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.harness import GatewayServer
from tests.upstreams import KimiEmulator, KimiReply
from tests.upstreams.kimi import TOOL_REFUSAL

Start = Callable[..., GatewayServer]
HI = [{"role": "user", "content": "你好"}]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_kimi_thinking_streams_reasoning_content_then_the_answer(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.reply = KimiReply(text="你好！我是 Kimi。", thinking="用户在打招呼，我应该礼貌回应。")
    chunks = list(kimi_gateway().openai().chat.completions.create(model="kimi-thinking", messages=HI, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert reasoning == "用户在打招呼，我应该礼貌回应。"
    assert "".join(d.content or "" for d in deltas) == "你好！我是 Kimi。"
    first_text = next(i for i, d in enumerate(deltas) if d.content)
    assert all(not getattr(d, "reasoning_content", None) for d in deltas[first_text:])  # reasoning first
    assert kimi_emu.chat_calls[0].thinking and not kimi_emu.chat_calls[0].search


def test_search_answers_carry_numbered_citations_and_source_links(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.reply = KimiReply(text="北京是中国的首都。人口两千多万。", cite=[2, 1], sources=[
        {"title": "北京市人民政府", "url": "https://www.beijing.gov.cn/"},
        {"title": "Beijing - Wikipedia", "url": "https://en.wikipedia.org/wiki/Beijing"}])
    reply = kimi_gateway().openai().chat.completions.create(model="kimi-search", messages=HI)
    assert reply.choices[0].message.content == (
        "北京是中国的首都[2][1]。人口两千多万。\n\nSources:\n1. [北京市人民政府](https://www.beijing.gov.cn/)\n"
        "2. [Beijing - Wikipedia](https://en.wikipedia.org/wiki/Beijing)")
    assert kimi_emu.chat_calls[0].search


def test_a_degraded_model_is_a_response_header_and_a_log_line_never_answer_text(
        kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.reply = KimiReply(text="答案。", degrade=True)
    gateway = kimi_gateway()
    for stream in (False, True):
        raw = gateway.openai().chat.completions.with_raw_response.create(model="kimi", messages=HI, stream=stream)
        assert raw.headers["x-chatbridge-notice"] == "model_degraded"
        parsed = raw.parse()
        text = parsed.choices[0].message.content if not stream else "".join(
            c.choices[0].delta.content or "" for c in parsed if c.choices)
        assert text == "答案。"
    assert "kimi upstream notice: model_degraded (当前使用人数较多" in gateway.logs.text


def test_an_answer_that_arrives_whole_is_streamed_in_paced_pieces(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.reply = KimiReply(text="长" * 400, whole=True)
    gateway = kimi_gateway(pseudo_stream_chunk_chars=20, pseudo_stream_interval_ms=10)
    started = time.monotonic()
    arrivals: list[float] = []
    pieces: list[str] = []
    for chunk in gateway.openai().chat.completions.create(model="kimi", messages=HI, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == "长" * 400 and pieces == ["长" * 20] * 20
    assert arrivals[-1] - arrivals[0] >= 19 * 0.01  # paced, not one burst


def test_a_client_that_leaves_stops_the_pacing(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.reply = KimiReply(text="长" * 2000, whole=True)
    gateway = kimi_gateway(pseudo_stream_chunk_chars=10, pseudo_stream_interval_ms=50)  # 10 s to send it all
    with httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json={"model": "kimi", "messages": HI, "stream": True}) as response:
            for line in response.iter_lines():
                if "长" in line:
                    break
    deadline = time.monotonic() + 10
    while "client disconnected" not in gateway.logs.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "client disconnected; upstream request cancelled" in gateway.logs.text


def test_a_refusal_of_a_required_tool_call_is_a_clear_error_never_an_invented_call(
        kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.refuse_tools = True
    client = kimi_gateway().openai()
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="kimi", messages=[{"role": "user", "content": "Weather in Paris?"}],
                                           tools=TOOLS, tool_choice=choice)  # type: ignore[arg-type]
        assert caught.value.status_code == 502
        body = caught.value.body
        assert isinstance(body, dict) and body["code"] == "tool_call_declined"
        assert "declined to call a tool" in body["message"] and TOOL_REFUSAL[:10] in body["message"]
    assert len(kimi_emu.chat_calls) == 4  # each: the answer round and one corrective round
    auto = client.chat.completions.create(model="kimi", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS)
    assert auto.choices[0].message.content == TOOL_REFUSAL and auto.choices[0].finish_reason == "stop"


def test_a_required_tool_call_that_comes_is_returned(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    def respond(call: Any, history: Any) -> str:
        tag = call.text.split("<tool_call_", 1)[1].split(">", 1)[0]
        return f"<tool_call_{tag}>\n{json.dumps({'name': 'get_weather', 'arguments': {'city': 'Paris'}})}\n</tool_call_{tag}>"

    kimi_emu.respond = respond
    reply = kimi_gateway().openai().chat.completions.create(
        model="kimi", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS, tool_choice="required")  # type: ignore[arg-type]
    [call] = reply.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}


def test_images_are_uploaded_and_referenced_in_the_message(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    content = [{"type": "text", "text": "这是什么？"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    kimi_gateway().openai().chat.completions.create(model="kimi", messages=[{"role": "user", "content": content}])
    [call] = kimi_emu.chat_calls
    assert len(call.files) == 1 and kimi_emu.uploads == [base64.b64decode(PNG)]
    assert call.text == "这是什么？\n[image 1]"


@pytest.mark.parametrize(("url", "status", "says"), [
    ("data:image/png;base64,not*base64", 400, "not valid base64"),
    ("data:text/plain;base64," + base64.b64encode(b"hello").decode(), 400, "not an image"),
    ("http://127.0.0.1:9/cat.png", 400, "private addresses"),
    ("http://localhost/cat.png", 400, "private addresses"),
    ("file:///etc/passwd", 400, "data: URL or an http(s) URL"),
])
def test_a_bad_image_is_a_400_naming_the_part(kimi_emu: KimiEmulator, kimi_gateway: Start, url: str, status: int,
                                              says: str) -> None:
    content = [{"type": "text", "text": "看"}, {"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(openai.APIStatusError) as caught:
        kimi_gateway().openai().chat.completions.create(model="kimi", messages=[{"role": "user", "content": content}])
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict) and "messages[0].content[1]" in body["message"] and says in body["message"]
    assert kimi_emu.chat_calls == []


def test_an_upload_that_fails_upstream_is_a_5xx_naming_the_part(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.upload_fails = True
    content = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    with pytest.raises(openai.APIStatusError) as caught:
        kimi_gateway().openai().chat.completions.create(model="kimi", messages=[{"role": "user", "content": content}])
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict) and "uploading the image messages[0].content[0] failed" in body["message"]


def test_the_live_catalog_adds_its_models_and_its_options_go_upstream(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.catalog = [{"displayName": "K2.6", "scenario": "SCENARIO_K2D5", "model": "k2d6-chat", "thinking": False},
                        {"displayName": "K2.6", "scenario": "SCENARIO_K2D5", "model": "k2d6-chat", "thinking": True},
                        {"displayName": "OK Computer", "scenario": "SCENARIO_OK_COMPUTER", "kimiPlusId": "ok-computer"}]
    client = kimi_gateway().openai()
    ids = [m.id for m in client.models.list().data]
    assert ids == ["kimi", "kimi-thinking", "kimi-search", "kimi-thinking-search", "kimi-k2.6", "kimi-k2.6-search",
                   "kimi-k2.6-thinking", "kimi-k2.6-thinking-search"]
    client.chat.completions.create(model="kimi-k2.6-thinking", messages=HI)
    call = kimi_emu.chat_calls[0]
    assert (call.model, call.thinking, call.scenario) == ("k2d6-chat", True, "SCENARIO_K2D5")


def test_without_a_catalog_the_static_models_are_served(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    ids = [m.id for m in kimi_gateway().openai().models.list().data]
    assert ids == ["kimi", "kimi-thinking", "kimi-search", "kimi-thinking-search"]


def test_guest_mode_answers_with_no_configuration(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    gateway = kimi_gateway(accounts=0)
    reply = gateway.openai().chat.completions.create(model="kimi", messages=HI)
    assert reply.choices[0].message.content
    assert kimi_emu.registrations == 1 and kimi_emu.chat_calls[0].user.startswith("guest-")
    health = httpx.get(gateway.base_url + "/health").json()
    assert "kimi" in json.dumps(health) and "guest" in json.dumps(health)


def test_a_used_up_guest_quota_is_a_429_saying_what_to_configure(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.guest_quota = 0
    with pytest.raises(openai.RateLimitError) as caught:
        kimi_gateway(accounts=0).openai().chat.completions.create(model="kimi", messages=HI)
    assert "KIMI_REFRESH_TOKEN" in str(caught.value.body)


def test_an_error_before_the_answer_is_retried_on_the_other_account(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.trailer_errors.append(("internal", "服务内部错误", "server.internal", False))
    reply = kimi_gateway(accounts=2).openai().chat.completions.create(model="kimi", messages=HI)
    assert reply.choices[0].message.content
    assert len(kimi_emu.chat_calls) == 2 and kimi_emu.chat_calls[0].user != kimi_emu.chat_calls[1].user


def test_resource_exhausted_everywhere_is_a_429(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.trailer_errors += [("resource_exhausted", "请求过于频繁", "rate.limit", False)] * 2
    with pytest.raises(openai.RateLimitError) as caught:
        kimi_gateway(accounts=2).openai().chat.completions.create(model="kimi", messages=HI)
    assert "resource_exhausted" in str(caught.value.body) and "rate.limit" in str(caught.value.body)


def test_an_error_after_the_answer_began_ends_the_stream_in_band(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.reply = KimiReply(text="一段很长的回答。" * 10)
    kimi_emu.trailer_errors.append(("internal", "生成中断", "stream.interrupted", True))
    gateway = kimi_gateway()
    with httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=30) as http:
        response = http.post("/v1/chat/completions", json={"model": "kimi", "messages": HI, "stream": True})
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert response.status_code == 200 and "[DONE]" not in events
    assert "stream.interrupted" in json.loads(events[-1])["error"]["message"]


def answer_of(client: Any, model: str, stream: bool) -> tuple[str, str]:
    """(content, reasoning_content) of one answer, streamed or not, as the SDK gives them."""
    if not stream:
        message = client.chat.completions.create(model=model, messages=HI).choices[0].message
        return message.content or "", getattr(message, "reasoning_content", None) or ""
    deltas = [c.choices[0].delta for c in client.chat.completions.create(model=model, messages=HI, stream=True) if c.choices]
    return "".join(d.content or "" for d in deltas), "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)


@pytest.mark.parametrize("streamed_too", [False, True], ids=["whole", "then-streamed"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_an_answer_that_comes_whole_in_the_message_frame_reaches_the_client_once(
        kimi_emu: KimiEmulator, kimi_gateway: Start, streamed_too: bool, stream: bool) -> None:
    kimi_emu.reply = KimiReply(text="整个回答一次到达。", thinking="先想一想。", in_message=True, streamed_too=streamed_too)
    assert answer_of(kimi_gateway().openai(), "kimi-thinking", stream) == ("整个回答一次到达。", "先想一想。")


@pytest.mark.parametrize("ending", ["completed", "grpc-web"])
def test_a_stream_that_ends_after_its_completed_status_is_a_whole_answer(
        kimi_emu: KimiEmulator, kimi_gateway: Start, ending: str) -> None:
    kimi_emu.ending = ending  # no `done`, no end-of-stream frame; a gRPC-web trailer frame, or nothing
    client = kimi_gateway().openai()
    for stream in (False, True):
        assert answer_of(client, "kimi", stream)[0] == "收到：你好"
    assert len(kimi_emu.chat_calls) == 2  # each answered the first time


def test_reasoning_flagged_as_thinking_text_then_answer_is_split_where_the_flag_turns(
        kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.reply = KimiReply(text="答案在这里。", thinking="这是推理。", flagged=True)
    assert answer_of(kimi_gateway().openai(), "kimi-thinking", True) == ("答案在这里。", "这是推理。")


def test_a_localized_message_in_an_error_reaches_the_client(kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.localized_details = True
    kimi_emu.trailer_errors += [("resource_exhausted", "rate limited", "请求过于频繁，请稍后再试", False)] * 2
    with pytest.raises(openai.RateLimitError) as caught:
        kimi_gateway(accounts=2).openai().chat.completions.create(model="kimi", messages=HI)
    assert "请求过于频繁，请稍后再试" in str(caught.value.body)
