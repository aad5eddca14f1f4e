"""The Anthropic Messages API through the gateway, with the official `anthropic` SDK: text, thinking,
images, documents, stop sequences, betas, system turns, count_tokens, models and keep-alive pings."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import anthropic
import orjson
import pytest

from tests.harness import GatewayServer
from tests.pdf import text_pdf
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator, Reply

K2 = "MBZUAI-IFM/K2-Think-v2"
HI: list[Any] = [{"role": "user", "content": "hi"}]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()


@pytest.fixture
def compat_gateway(compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> Callable[..., GatewayServer]:
    def start(**overrides: Any) -> GatewayServer:
        values: dict[str, Any] = {"openai_compat_base_url": compat_emu.base_url + "/v1", "k2think_enabled": False,
                                  "openai_compat_models": "fake-model"}
        values.update(overrides)
        return start_gateway(**values)

    return start


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every event of a raw Anthropic stream; every event must have both."""
    out = []
    for raw in text.split("\n\n"):
        if not raw.strip():
            continue
        lines = raw.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), raw
        name, data = lines[0][7:], orjson.loads(lines[1][6:])
        assert data["type"] == name
        out.append((name, data))
    return out


@pytest.mark.parametrize("upstream", ["k2think", "openai"])
def test_text_non_streamed(upstream: str, k2_gateway: Callable[..., GatewayServer],
                           compat_gateway: Callable[..., GatewayServer]) -> None:
    gw, model = (k2_gateway(), K2) if upstream == "k2think" else (compat_gateway(), "fake-model")
    message = gw.anthropic().messages.create(model=model, max_tokens=256, messages=HI)
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == model
    assert [b.type for b in message.content] == ["text"]  # K2 reasons, but thinking was not asked for
    assert message.content[0].text == "Hello! How can I help you today?"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0
    assert message._request_id  # the `request-id` header


@pytest.mark.parametrize("upstream", ["k2think", "openai"])
def test_text_streamed_with_the_sdk_helpers(upstream: str, k2_gateway: Callable[..., GatewayServer],
                                            compat_gateway: Callable[..., GatewayServer],
                                            k2emu: K2ThinkEmulator, compat_emu: OpenAICompatEmulator) -> None:
    k2emu.split_writes = compat_emu.split_writes = True
    k2emu.split_size = compat_emu.split_size = (3, 1, 7)
    gw, model = (k2_gateway(), K2) if upstream == "k2think" else (compat_gateway(), "fake-model")
    with gw.anthropic().messages.stream(model=model, max_tokens=256, messages=HI) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Hello! How can I help you today?" and len(texts) > 1
    assert final.content[0].text == "".join(texts)  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_raw_stream_order_and_ping(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    with gw.http() as http:
        response = http.post("/v1/messages", json={"model": K2, "max_tokens": 64, "stream": True, "messages": HI},
                             headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"]
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    assert names[2] == "content_block_start" and names[-3] == "content_block_stop"
    assert {d["index"] for n, d in events if n.startswith("content_block")} == {0}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("upstream", ["k2think", "openai"])
def test_unsigned_reasoning_is_never_a_thinking_block(upstream: str, stream: bool, k2_gateway: Callable[..., GatewayServer],
                                                      compat_gateway: Callable[..., GatewayServer],
                                                      compat_emu: OpenAICompatEmulator) -> None:
    """K2Think and OpenAI-compatible upstreams reason but sign nothing: asked for thinking, the client gets
    the answer without a thinking block (an unsigned one would be refused if replayed to Anthropic), and
    the answer replayed as history is taken."""
    compat_emu.reasoning = "The user greets me. I should greet back."
    gw, model = (k2_gateway(), K2) if upstream == "k2think" else (compat_gateway(), "fake-model")
    client = gw.anthropic()
    kwargs: dict[str, Any] = {"model": model, "max_tokens": 2048, "messages": HI}
    for thinking in ({"type": "enabled", "budget_tokens": 1024}, {"type": "adaptive"}, {"type": "disabled"}, None):
        asked = {} if thinking is None else {"thinking": thinking}
        if stream:
            with client.messages.stream(**asked, **kwargs) as s:
                message = s.get_final_message()
        else:
            message = client.messages.create(**asked, **kwargs)
        assert [b.type for b in message.content] == ["text"], thinking
        assert message.content[0].text == "Hello! How can I help you today?"  # type: ignore[union-attr]
        assert "greet back" not in message.model_dump_json()
    history = [*HI, {"role": "assistant", "content": [b.model_dump() for b in message.content]},
               {"role": "user", "content": "again"}]
    again = client.messages.create(model=model, max_tokens=2048, thinking={"type": "adaptive"}, messages=history)
    assert again.content[0].text  # type: ignore[union-attr]


def test_thinking_history_is_dropped_for_upstreams_that_do_not_verify_it(
    k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]
) -> None:
    client = k2_gateway().anthropic()
    client.messages.create(model=K2, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024}, messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "secret plan", "signature": ""},
                                          {"type": "redacted_thinking", "data": "opaque"},
                                          {"type": "text", "text": "Hello."}]},
        {"role": "user", "content": "again"},
    ])
    sent = k2emu.last_request
    assert sent is not None
    assert sent.json["messages"][1] == {"role": "assistant", "content": "Hello."}
    assert "secret plan" not in sent.body.decode() and "opaque" not in sent.body.decode()


def test_images_base64_and_url_reach_the_upstream(compat_emu: OpenAICompatEmulator,
                                                  compat_gateway: Callable[..., GatewayServer]) -> None:
    client = compat_gateway().anthropic()
    client.messages.create(model="fake-model", max_tokens=64, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is in these?"},
    ]}])
    sent = compat_emu.last_request
    assert sent is not None
    assert sent.json["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is in these?"},
    ]


def test_documents_become_text_for_upstreams_that_cannot_read_them(
    k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]
) -> None:
    client = k2_gateway().anthropic()
    pdf = base64.b64encode(text_pdf("Quarterly revenue grew by 12 percent")).decode()
    client.messages.create(model=K2, max_tokens=64, messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
         "title": "Report"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Plain notes."}},
        {"type": "text", "text": "Summarise."},
    ]}])
    sent = k2emu.last_request
    assert sent is not None
    content = sent.json["messages"][0]["content"]
    assert '<document title="Report">' in content and "Quarterly revenue grew by 12 percent" in content
    assert "Plain notes." in content and content.endswith("Summarise.")
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=K2, max_tokens=64, messages=[{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": base64.b64encode(b"%PDF-1.4 not really").decode()}},
        ]}])
    assert "PDF could not be read" in caught.value.message
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequences_cut_by_the_gateway_when_the_upstream_ignores_them(
    k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool
) -> None:
    k2emu.reply = Reply(reasoning="", answer="one two STOP three four")
    k2emu.split_writes, k2emu.split_size = True, (1, 2)
    client = k2_gateway().anthropic()
    kwargs: dict[str, Any] = {"model": K2, "max_tokens": 64, "messages": HI, "stop_sequences": ["never", "STOP"]}
    if stream:
        with client.messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    assert message.content[0].text == "one two "  # type: ignore[union-attr]
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "STOP"
    sent = k2emu.last_request
    assert sent is not None and sent.json["params"]["stop"] == ["never", "STOP"]  # still asked of the upstream


def test_stop_sequence_reported_by_a_vllm_style_upstream(compat_emu: OpenAICompatEmulator,
                                                         compat_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.answer, compat_emu.report_stop_reason = "alpha beta END gamma", True
    client = compat_gateway().anthropic()
    for stream in (False, True):
        if stream:
            with client.messages.stream(model="fake-model", max_tokens=64, messages=HI, stop_sequences=["END"]) as s:
                message = s.get_final_message()
        else:
            message = client.messages.create(model="fake-model", max_tokens=64, messages=HI, stop_sequences=["END"])
        assert message.content[0].text == "alpha beta "  # type: ignore[union-attr]
        assert message.stop_reason == "stop_sequence" and message.stop_sequence == "END"


def test_max_tokens_stop_reason(compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.finish_reason = "length"
    client = compat_gateway().anthropic()
    assert client.messages.create(model="fake-model", max_tokens=5, messages=HI).stop_reason == "max_tokens"
    with client.messages.stream(model="fake-model", max_tokens=5, messages=HI) as s:
        assert s.get_final_message().stop_reason == "max_tokens"
    sent = compat_emu.last_request
    assert sent is not None and sent.json["max_tokens"] == 5


def test_beta_path_unknown_betas_versions_and_fields_are_accepted(
    compat_emu: OpenAICompatEmulator, compat_gateway: Callable[..., GatewayServer]
) -> None:
    client = compat_gateway().anthropic(default_headers={"anthropic-version": "2099-12-31"})
    message = client.beta.messages.create(
        model="fake-model", max_tokens=64, messages=HI, betas=["made-up-beta-2099-01-01", "context-1m-2025-08-07"],
        extra_body={"context_management": {"edits": []}, "some_future_field": {"x": 1}, "service_tier": "auto"},
    )
    assert message.content[0].text == "Hello! How can I help you today?"  # type: ignore[union-attr]
    sent = compat_emu.last_request
    assert sent is not None and "some_future_field" not in sent.json and "context_management" not in sent.json
    with client.beta.messages.stream(model="fake-model", max_tokens=64, messages=HI, betas=["another-2099"]) as s:
        assert s.get_final_message().stop_reason == "end_turn"
    counted = client.beta.messages.count_tokens(model="fake-model", messages=HI, betas=["made-up-beta"])
    assert counted.input_tokens > 0


def test_system_blocks_and_mid_conversation_system_turns(compat_emu: OpenAICompatEmulator,
                                                          compat_gateway: Callable[..., GatewayServer]) -> None:
    client = compat_gateway().anthropic()
    client.messages.create(model="fake-model", max_tokens=64, system=[
        {"type": "text", "text": "First block."},
        {"type": "text", "text": "Second block.", "cache_control": {"type": "ephemeral"}},
    ], messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "system", "content": "From now on answer in French."},  # type: ignore[misc, list-item]
        {"role": "user", "content": "again"},
    ])
    sent = compat_emu.last_request
    assert sent is not None
    assert [m["role"] for m in sent.json["messages"]] == ["system", "user", "assistant", "system", "user"]
    assert sent.json["messages"][0]["content"] == [{"type": "text", "text": "First block."},
                                                   {"type": "text", "text": "Second block."}]  # blocks, in order
    assert sent.json["messages"][3]["content"] == "From now on answer in French."


def test_session_key_from_metadata_or_the_claude_code_header(compat_emu: OpenAICompatEmulator,
                                                             compat_gateway: Callable[..., GatewayServer]) -> None:
    client = compat_gateway().anthropic()
    client.messages.create(model="fake-model", max_tokens=16, messages=HI, metadata={"user_id": "user-42"},
                           extra_headers={"x-claude-code-session-id": "session-7"})
    assert compat_emu.last_request is not None and compat_emu.last_request.json["user"] == "user-42"
    client.messages.create(model="fake-model", max_tokens=16, messages=HI,
                           extra_headers={"x-claude-code-session-id": "session-7"})
    assert compat_emu.last_request is not None and compat_emu.last_request.json["user"] == "session-7"


def test_count_tokens_matches_message_start(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    client = gw.anthropic()
    request: dict[str, Any] = {
        "model": K2, "system": "You are terse.",
        "messages": [{"role": "user", "content": "How many tokens is this sentence, roughly speaking?"}],
        "tools": [{"name": "lookup", "description": "Look a word up", "input_schema": {
            "type": "object", "properties": {"word": {"type": "string"}}}}],
    }
    counted = client.messages.count_tokens(**request).input_tokens
    assert counted > 20
    with gw.http() as http:
        raw = http.post("/v1/messages", json={**request, "max_tokens": 64, "stream": True})
    start = sse_events(raw.text)[0][1]
    assert start["message"]["usage"]["input_tokens"] == counted
    longer = client.messages.count_tokens(**{**request, "system": "You are terse. " * 50}).input_tokens
    assert longer > counted + 100  # a real tokenizer: "You are terse. " is 4-5 tokens
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=HI)


def test_models_list_in_anthropic_shape_with_aliases(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(anthropic_model_map=f"claude-sonnet-4-5={K2}")
    client = gw.anthropic()
    ids = [m.id for m in client.models.list()]  # the SDK auto-pages: ends because has_more is false
    assert ids == [K2, f"{K2}-nothink", "claude-sonnet-4-5"]
    first = client.models.list(limit=1)
    assert [m.id for m in first.data] == [K2] and first.has_more and first.last_id == K2
    assert [m.id for m in client.models.list(limit=2)] == ids  # paged by after_id
    before = client.models.list(before_id="claude-sonnet-4-5", limit=1)  # the page just before an id
    assert [m.id for m in before.data] == [f"{K2}-nothink"] and before.has_more and before.first_id == f"{K2}-nothink"
    assert [m.id for m in client.models.list(before_id="claude-sonnet-4-5").data] == [K2, f"{K2}-nothink"]
    assert [m.id for m in client.models.list(after_id=K2).data] == [f"{K2}-nothink", "claude-sonnet-4-5"]
    model = client.models.retrieve("claude-sonnet-4-5")
    assert model.type == "model" and model.display_name == "claude-sonnet-4-5" and model.created_at
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-nothing")
    openai_shape = gw.openai().models.list()
    assert openai_shape.data[0].object == "model"  # no anthropic-version: OpenAI's shape


def test_claude_model_names_map_to_real_models(compat_emu: OpenAICompatEmulator, k2emu: K2ThinkEmulator,
                                               start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token(),
                       openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                       anthropic_model_map=f"claude-sonnet-4-5={K2},claude-*haiku*=openai",
                       anthropic_default_model="fake-model")
    client = gw.anthropic()
    for model, upstream in [("claude-sonnet-4-5", "k2"), ("claude-3-5-haiku-20241022", "openai"),
                            ("claude-opus-4-1", "openai"), ("CLAUDE-SONNET-4-5", "k2")]:
        k2emu.clear_requests()
        compat_emu.clear_requests()
        message = client.messages.create(model=model, max_tokens=16, messages=HI)
        assert message.model == model  # echoed as asked
        reached = k2emu if upstream == "k2" else compat_emu
        assert any(r.method == "POST" for r in reached.requests), model
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="gpt-unknown", max_tokens=16, messages=HI)
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_pings_keep_a_silent_stream_alive(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.shape = "delta_tags"
    k2emu.reply = Reply(reasoning="", answer="slow answer here")
    k2emu.stream_chunks, k2emu.chunk_delay = 3, 0.8
    gw = k2_gateway()
    gw.app.lanes["/v1/messages"].dialect.keepalive_interval = 0.2
    with gw.http() as http:
        response = http.post("/v1/messages", json={"model": K2, "max_tokens": 64, "stream": True, "messages": HI})
    names = [name for name, _ in sse_events(response.text)]
    assert names.count("ping") >= 3  # one after message_start, more during the upstream's silences
    assert names[-1] == "message_stop"


def test_root_answers_for_probes(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    with gw.http() as http:
        assert http.head("/").status_code == 200
        assert http.get("/").status_code == 200


def test_swagger_documents_the_anthropic_routes(k2_gateway: Callable[..., GatewayServer]) -> None:
    with k2_gateway().http() as http:
        spec = http.get("/openapi.json").json()
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["$ref"].endswith("/MessagesRequest")
    assert {"model", "messages", "max_tokens", "system", "tools"} <= set(spec["components"]["schemas"]["MessagesRequest"]["properties"])
