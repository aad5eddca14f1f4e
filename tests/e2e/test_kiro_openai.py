"""Kiro through the real gateway with the official `openai` SDK: answers, tools, reasoning, usage, errors."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from chatbridge.providers.media import ImageLoader
from tests.e2e.kiro_helpers import credentials, kiro_settings
from tests.harness import GatewayServer
from tests.upstreams import KiroEmulator
from tests.upstreams.kiro_frames import KiroReply

StartGateway = Callable[..., GatewayServer]
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
MODEL = "claude-sonnet-4.5"
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def current(body: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = body["conversationState"]["currentMessage"]["userInputMessage"]
    return message


def results_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list((current(body).get("userInputMessageContext") or {}).get("toolResults") or [])


def weather_tool_loop(body: dict[str, Any]) -> KiroReply:
    """Call get_weather for Paris; once the result is back, answer with it."""
    results = results_of(body)
    if results:
        return KiroReply(text=f"It is {results[0]['content'][0]['text']} in Paris.")
    name = current(body)["userInputMessageContext"]["tools"][0]["toolSpecification"]["name"]
    return KiroReply(text="Let me check.", tool_calls=[{"name": name, "input": {"city": "Paris"}}])


@pytest.fixture
def gateway(kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path) -> GatewayServer:
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", kiro_emu.add_account())
    return start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop(gateway: GatewayServer, kiro_emu: KiroEmulator, stream: bool) -> None:
    kiro_emu.responder = weather_tool_loop
    client = gateway.openai()
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with client.chat.completions.stream(model=MODEL, messages=messages, tools=TOOLS) as events:
            first = events.get_final_completion()
    else:
        first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    choice = first.choices[0]
    [call] = choice.message.tool_calls or []
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("tooluse_")
    messages += [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, stream=False)
    assert second.choices[0].message.content == "It is sunny in Paris."
    sent = kiro_emu.chat_requests[-1].json
    assert results_of(sent) == [{"toolUseId": call.id, "content": [{"text": "sunny"}], "status": "success"}]
    assert sent["conversationState"]["history"][1]["assistantResponseMessage"]["toolUses"] == [
        {"toolUseId": call.id, "name": "get_weather", "input": {"city": "Paris"}}]
    assert kiro_emu.rejections == []


def test_a_tool_name_kiro_refuses_round_trips(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    """OpenAI allows dots in names (and the Anthropic dialect longer names); Kiro takes neither."""
    long_name = "project.management.server.create_issue_with_labels_and_assignees"
    tools = [{"type": "function", "function": {**TOOLS[0]["function"], "name": long_name}}]
    kiro_emu.responder = weather_tool_loop
    client = gateway.openai()
    first = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "go"}], tools=tools)
    [call] = first.choices[0].message.tool_calls or []
    assert call.function.name == long_name
    sent_name = current(kiro_emu.chat_requests[0].json)["userInputMessageContext"]["tools"][0]["toolSpecification"]["name"]
    assert len(long_name) == 64 and len(sent_name) <= 64 and "." not in sent_name
    messages: list[Any] = [{"role": "user", "content": "go"}, first.choices[0].message.model_dump(exclude_none=True),
                           {"role": "tool", "tool_call_id": call.id, "content": "done"}]
    assert client.chat.completions.create(model=MODEL, messages=messages, tools=tools).choices[0].message.content
    assert kiro_emu.rejections == []


def test_two_user_turns_in_a_row_and_unordered_tool_results_go_out_normalised(
    gateway: GatewayServer, kiro_emu: KiroEmulator,
) -> None:
    kiro_emu.reply = KiroReply(text="Paris is sunny, Rome is rainy.")
    messages: list[Any] = [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "user", "content": "And in Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "tooluse_paris", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "tooluse_rome", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "tooluse_rome", "content": "rainy"},
        {"role": "tool", "tool_call_id": "tooluse_paris", "content": "sunny"},
    ]
    reply = gateway.openai().chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    assert reply.choices[0].message.content == "Paris is sunny, Rome is rainy."
    assert kiro_emu.rejections == []
    [request] = kiro_emu.chat_requests
    history = request.json["conversationState"]["history"]
    assert history[0]["userInputMessage"]["content"] == "You are a weather bot.\n\nWeather in Paris?\n\nAnd in Rome?"
    assert [r["toolUseId"] for r in results_of(request.json)] == ["tooluse_paris", "tooluse_rome"]
    assert request.json["profileArn"].startswith("arn:aws:codewhisperer:")


def test_reasoning_arrives_as_reasoning_content_and_usage_from_the_context_meter(
    gateway: GatewayServer, kiro_emu: KiroEmulator,
) -> None:
    kiro_emu.reply = KiroReply(text="42.", reasoning=["The answer to everything."], context_percent=2.0)
    client = gateway.openai()
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "The answer?"}])
    assert reply.choices[0].message.reasoning_content == "The answer to everything."  # type: ignore[attr-defined]
    assert reply.choices[0].message.content == "42." and reply.usage is not None and reply.usage.prompt_tokens == 4000
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "The answer?"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices) == \
        "The answer to everything."
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 4000


def test_every_byte_boundary_on_the_wire(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.reply = KiroReply(text="春天来了，花开了 — spring 🌸", reasoning=["想一想 🤔"], pieces=4)
    kiro_emu.split_writes, kiro_emu.split_size = True, (1, 2, 3, 5, 7)
    client = gateway.openai()
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "诗"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "春天来了，花开了 — spring 🌸"


@pytest.mark.parametrize("stream", [False, True])
def test_a_stream_cut_off_without_its_closing_events_finishes_with_length(
    gateway: GatewayServer, kiro_emu: KiroEmulator, stream: bool,
) -> None:
    kiro_emu.reply, kiro_emu.truncate = KiroReply(text="The first half of a long"), True
    client = gateway.openai()
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "long"}], stream=True))
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        reasons = [client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "long"}]).choices[0].finish_reason]
    assert reasons == ["length"]
    assert "finishing with 'length'" in gateway.logs.text


def test_a_content_length_exception_finishes_with_length(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.reply = KiroReply(text="Some text", pieces=1)
    kiro_emu.exception, kiro_emu.exception_after = ("ContentLengthExceededException", "Too long"), 1
    reply = gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == "Some text" and reply.choices[0].finish_reason == "length"


def test_a_bad_crc_midway_ends_the_stream_with_an_error(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.reply = KiroReply(text="one two three four", pieces=4)
    kiro_emu.corrupt, kiro_emu.corrupt_frame = "message", 2
    with httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=30) as http:
        streamed = http.post("/v1/chat/completions", json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]})
        whole = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    events = [line[len("data: "):] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events and "CRC does not match" in json.loads(events[-1])["error"]["message"]
    assert whole.status_code == 502 and "CRC does not match" in whole.json()["error"]["message"]


def test_an_exception_frame_before_any_text_is_retried_on_the_next_credential(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path,
) -> None:
    paths = [kiro_emu.write_social_file(tmp_path / f"login-{i}.json", kiro_emu.add_account()) for i in range(2)]
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_files=",".join(map(str, paths)),
                                            kiro_token_file=tmp_path / "none.json"))
    kiro_emu.exception, kiro_emu.exception_after = ("ThrottlingException", "Rate exceeded"), 0
    with pytest.raises(openai.RateLimitError):
        gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert len(kiro_emu.chat_requests) == 2  # each credential tried once, then the 429 is the client's


def test_effort_goes_out_only_to_models_that_take_it(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.catalog_extra = [{"modelId": "claude-sonnet-4.6"}]
    client = gateway.openai()
    client.chat.completions.create(model="claude-sonnet-4.5", messages=[{"role": "user", "content": "x"}], reasoning_effort="high")
    assert "additionalModelRequestFields" not in kiro_emu.chat_requests[-1].json and kiro_emu.rejections == []


def test_the_live_catalog_adds_models_and_their_spellings(kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path) -> None:
    kiro_emu.catalog_extra = [{"modelId": "claude-sonnet-4.6", "modelName": "Claude Sonnet 4.6"}]
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", kiro_emu.add_account())
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))
    client = gateway.openai()
    ids = [m.id for m in client.models.list()]
    assert ids[:6] == ["claude-sonnet-4-20250514", "claude-sonnet-4", "claude-sonnet-4.5", "claude-haiku-4.5",
                       "claude-opus-4.5", "auto"] and "claude-sonnet-4.6" in ids
    for spelling in ("claude-sonnet-4-6", "claude-sonnet-4-5-20250929", "claude-haiku-4-5", "claude-3-5-haiku-20241022"):
        assert client.chat.completions.create(model=spelling, messages=[{"role": "user", "content": "x"}]).model == spelling
    assert [current(r.json)["modelId"] for r in kiro_emu.chat_requests] == [
        "claude-sonnet-4.6", "claude-sonnet-4.5", "claude-haiku-4.5", "claude-haiku-4.5"]
    client.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}], reasoning_effort="high")
    assert kiro_emu.chat_requests[-1].json["additionalModelRequestFields"] == {"output_config": {"effort": "high"}}


def test_an_image_link_to_a_private_address_is_a_400_naming_the_part(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}]}])
    assert caught.value.body["param"] == "messages[0].content[1].image_url.url"  # type: ignore[index]
    assert "private addresses" in caught.value.message
    assert kiro_emu.chat_requests == []
    assert credentials(gateway)[0]["in_flight"] == 0  # the lease was given back


def test_an_image_link_is_fetched_and_goes_as_bytes(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    """Kiro takes no links: the gateway fetches the image (here from loopback, which only a test's loader allows)."""
    png = base64.b64decode(PNG_1PX)

    class Images(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    provider = gateway.runtime.providers["kiro"]
    provider.images = ImageLoader(5, allow_private=True)  # type: ignore[attr-defined]
    try:
        gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is it?"},
            {"type": "image_url", "image_url": {"url": f"http://127.0.0.1:{server.server_address[1]}/cat"}}]}])
    finally:
        server.shutdown()
        server.server_close()
    assert current(kiro_emu.chat_requests[0].json)["images"] == [{"format": "png", "source": {"bytes": PNG_1PX}}]


def test_an_image_goes_as_bytes(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    png = PNG_1PX
    gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]}])
    assert current(kiro_emu.chat_requests[0].json)["images"] == [{"format": "png", "source": {"bytes": png}}]


def test_a_model_refusing_the_effort_field_is_asked_again_without(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path,
) -> None:
    kiro_emu.catalog_extra = [{"modelId": "claude-opus-4.6"}]  # 4.6 takes effort by the rule; this deployment refuses it
    kiro_emu.effort_models = set()
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", kiro_emu.add_account())
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))
    reply = gateway.openai().chat.completions.create(model="claude-opus-4.6", messages=[{"role": "user", "content": "x"}],
                                                     reasoning_effort="high")
    assert reply.choices[0].message.content
    first, second = kiro_emu.chat_requests
    assert "additionalModelRequestFields" in first.json and "additionalModelRequestFields" not in second.json
    assert credentials(gateway)[0]["failures"] == 0



@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("how", ["reset", "ended inside a frame"])
def test_a_stream_that_breaks_off_after_content_finishes_with_length_and_blames_no_credential(
    gateway: GatewayServer, kiro_emu: KiroEmulator, how: str, stream: bool,
) -> None:
    """Idle streams reset near 68 s (the notes' 2026 update): what arrived is the answer, cut short."""
    kiro_emu.reply = KiroReply(text="one two three", pieces=3)
    if how == "reset":
        kiro_emu.break_mid_stream, kiro_emu.interrupt_after_events = True, 2
    else:
        kiro_emu.cut_last_frame = True
    client = gateway.openai()
    ask: list[Any] = [{"role": "user", "content": "long"}]
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=ask, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        choice = client.chat.completions.create(model=MODEL, messages=ask).choices[0]
        text, reasons = choice.message.content or "", [choice.finish_reason]
    assert text == "one two th" and reasons == ["length"]
    assert "broke off before its closing events" in gateway.logs.text and "finishing with 'length'" in gateway.logs.text
    [entry] = credentials(gateway)
    assert entry["state"] == "active" and entry["failures"] == 0 and entry["last_error"] is None


@pytest.mark.parametrize("event", ["messageMetadataEvent", "metadataEvent"])
def test_a_leading_metadata_event_does_not_hide_a_cut_off_answer(gateway: GatewayServer, kiro_emu: KiroEmulator, event: str) -> None:
    kiro_emu.reply, kiro_emu.lead_metadata = KiroReply(text="The first half"), event
    client = gateway.openai()
    whole = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}]).choices[0]
    assert whole.message.content == "The first half" and whole.finish_reason == "stop"
    kiro_emu.truncate = True
    cut = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}]).choices[0]
    assert cut.message.content == "The first half" and cut.finish_reason == "length"


@pytest.mark.parametrize("form", ["event", "message"])
def test_an_error_in_the_stream_ends_it_with_that_error(gateway: GatewayServer, kiro_emu: KiroEmulator, form: str) -> None:
    """Both in-stream error shapes of the notes (§4.4, §5.2): the `error` message type, the SDK's `error` event."""
    kiro_emu.reply = KiroReply(text="one two three", pieces=3)
    kiro_emu.error_frame, kiro_emu.exception_after = (form, "Encountered an unexpected error when processing the request"), 1
    with httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=30) as http:
        streamed = http.post("/v1/chat/completions", json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]})
        whole = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    events = [line[len("data: "):] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events and "unexpected error" in json.loads(events[-1])["error"]["message"]
    assert '"finish_reason":"length"' not in streamed.text.replace(" ", "")
    assert whole.status_code == 502 and "unexpected error" in whole.json()["error"]["message"]


def test_an_error_event_before_any_text_is_retried_on_the_next_credential(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path,
) -> None:
    paths = [kiro_emu.write_social_file(tmp_path / f"login-{i}.json", kiro_emu.add_account()) for i in range(2)]
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_files=",".join(map(str, paths)),
                                            kiro_token_file=tmp_path / "none.json"))
    kiro_emu.error_frame, kiro_emu.exception_after = ("event", "Encountered an unexpected error"), 0
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502 and "unexpected error" in caught.value.message
    assert len(kiro_emu.chat_requests) == 2  # each credential tried once, as for an InternalServerException
