"""The Kimi emulator itself: it must be as awkward as the protocol notes say, or the gateway's tests prove little."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chatbridge.core.connect import ConnectDecoder, ConnectFrame
from chatbridge.providers.kimi.errors import detail_texts
from tests.upstreams.kimi import (
    CATALOG_PATH,
    CHAT_PATH,
    LEGACY_REFRESH_PATH,
    REFRESH_PATH,
    REGISTER_PATH,
    TOOL_REFUSAL,
    KimiEmulator,
    KimiReply,
)


@pytest.fixture
def emu() -> Iterator[KimiEmulator]:
    with KimiEmulator() as emulator:
        yield emulator


def enveloped(body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return struct.pack(">BI", 0, len(data)) + data


def chat_body(text: str, chat_id: str = "", parent: str | None = None, search: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "blocks": [{"message_id": "", "text": {"content": text}}]}
    if parent:
        message["parent_id"] = parent
    body: dict[str, Any] = {"scenario": "SCENARIO_K2D5", "message": message, "options": {"thinking": False},
                            "tools": [{"type": "TOOL_TYPE_SEARCH", "search": {}}] if search else []}
    if chat_id:
        body["chat_id"] = chat_id
    return body


def access(emu: KimiEmulator, refresh: str) -> tuple[str, str]:
    answer = httpx.post(emu.url(REFRESH_PATH), json={"refresh_token": refresh})
    assert answer.status_code == 200, answer.text
    return answer.json()["accessToken"], answer.json()["refreshToken"]


def chat(emu: KimiEmulator, token: str, body: dict[str, Any] | bytes) -> tuple[int, list[ConnectFrame]]:
    data = body if isinstance(body, bytes) else enveloped(body)
    response = httpx.post(emu.url(CHAT_PATH), content=data, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"})
    if response.status_code != 200:
        return response.status_code, []
    decoder = ConnectDecoder()
    frames = decoder.decode(response.content)
    decoder.flush()
    return 200, frames


def objects(frames: list[ConnectFrame]) -> list[dict[str, Any]]:
    return [json.loads(f.data) for f in frames]


def test_a_chat_streams_patches_and_ends_with_done_and_an_end_of_stream_frame(emu: KimiEmulator) -> None:
    token, _ = access(emu, emu.mint_refresh_token("u1"))
    emu.reply = KimiReply(text="北京是首都。", thinking="想", sources=[{"title": "t", "url": "https://x.org"}], cite=[1],
                          degrade=True)
    status, frames = chat(emu, token, chat_body("北京？", search=True))
    assert status == 200
    parsed = objects(frames)
    assert "chat" in parsed[0] and parsed[0]["op"] == "set"
    assert frames[-1].end_stream and parsed[-1] == {} and "done" in parsed[-2]
    masks = [p.get("mask") for p in parsed]
    assert "block.text" in masks and "block.text.content" in masks and "block.think" in masks
    assert any(m and "," in m for m in masks)  # comma-joined masks on tool blocks
    assert {"heartbeat": {}} in parsed
    assert any(p.get("notification", {}).get("type") == "TYPE_MODEL_DEGRADE" for p in parsed)
    first = next(p for p in parsed if p.get("mask") == "block.text")
    assert first["block"]["text"]["content"]  # the set frame carries the first piece
    text = "".join(p["block"]["text"]["content"] for p in parsed if p.get("mask", "").startswith("block.text"))
    assert "\ue200cite" in text


def test_split_writes_cut_frames_anywhere(emu: KimiEmulator) -> None:
    token, _ = access(emu, emu.mint_refresh_token("u1"))
    whole = objects(chat(emu, token, chat_body("hi"))[1])
    emu.split_writes, emu.split_size = True, (1, 4, 7, 2)
    assert len(objects(chat(emu, token, chat_body("hi"))[1])) == len(whole)


def test_a_body_without_the_envelope_is_invalid_argument(emu: KimiEmulator) -> None:
    token, _ = access(emu, emu.mint_refresh_token("u1"))
    status, frames = chat(emu, token, json.dumps(chat_body("hi")).encode())
    assert status == 200 and frames[-1].end_stream
    assert objects(frames)[-1]["error"]["code"] == "invalid_argument"


def test_refresh_tokens_rotate_and_the_old_one_dies(emu: KimiEmulator) -> None:
    first = emu.mint_refresh_token("u1")
    _, second = access(emu, first)
    assert second != first and emu.refresh_token_alive(second) and not emu.refresh_token_alive(first)
    again = httpx.post(emu.url(REFRESH_PATH), json={"refresh_token": first})
    assert again.status_code == 401 and again.json()["code"] == "unauthenticated"
    legacy = httpx.get(emu.url(LEGACY_REFRESH_PATH), headers={"Authorization": f"Bearer {second}"})
    assert legacy.status_code == 200 and legacy.json()["refresh_token"] != second and not emu.refresh_token_alive(second)


def test_access_tokens_are_refused_until_refreshed(emu: KimiEmulator) -> None:
    refresh = emu.mint_refresh_token("u1")
    token, refresh = access(emu, refresh)
    emu.expire_access_tokens()
    assert chat(emu, token, chat_body("hi"))[0] == 401
    token, _ = access(emu, refresh)
    assert chat(emu, token, chat_body("hi"))[0] == 200


def test_one_reply_streams_per_account(emu: KimiEmulator) -> None:
    token, _ = access(emu, emu.mint_refresh_token("u1"))
    emu.hold_stream("u1")
    status, frames = chat(emu, token, chat_body("hi"))
    error = objects(frames)[-1]["error"]
    assert status == 200 and frames[-1].end_stream and error["code"] == "failed_precondition"
    assert "chat.user_stream_pushing" in detail_texts(error["details"])  # in the base64 protobuf detail
    emu.release_stream("u1")
    assert "done" in objects(chat(emu, token, chat_body("hi"))[1])[-2]
    assert emu.busy_refusals == 1


def test_chats_continue_with_chat_id_and_parent_id_and_unknown_ones_are_not_found(emu: KimiEmulator) -> None:
    token, _ = access(emu, emu.mint_refresh_token("u1"))
    first = objects(chat(emu, token, chat_body("我叫张三，来自北京"))[1])
    chat_id = first[0]["chat"]["id"]
    answer_id = next(p["message"]["id"] for p in first if p.get("message", {}).get("role") == "assistant")
    follow = objects(chat(emu, token, chat_body("我刚才说我来自哪里？", chat_id, answer_id))[1])
    text = "".join(p["block"]["text"]["content"] for p in follow if p.get("mask", "").startswith("block.text"))
    assert "北京" in text and emu.chat_calls[-1].new_chat is False and emu.chat_calls[-1].chat_id == chat_id
    fresh = objects(chat(emu, token, chat_body("我刚才说我来自哪里？"))[1])
    assert "北京" not in "".join(p["block"]["text"]["content"] for p in fresh if p.get("mask", "").startswith("block.text"))
    gone = objects(chat(emu, token, chat_body("x", "no-such-chat", "no-such-message"))[1])
    assert gone[-1]["error"]["code"] == "not_found"


def test_trailer_errors_carry_base64_details(emu: KimiEmulator) -> None:
    token, _ = access(emu, emu.mint_refresh_token("u1"))
    emu.trailer_errors.append(("resource_exhausted", "请求过于频繁", "rate.limit.exceeded", True))
    parsed = objects(chat(emu, token, chat_body("hi"))[1])
    assert any(p.get("mask") == "block.text" for p in parsed)  # some of the answer came first
    assert parsed[-1]["error"]["code"] == "resource_exhausted"
    assert "rate.limit.exceeded" in detail_texts(parsed[-1]["error"]["details"])


def test_a_guest_registers_a_device_and_chats(emu: KimiEmulator) -> None:
    assert httpx.post(emu.url(REGISTER_PATH), json={}).status_code == 422
    device = "1234567890123456789"
    answer = httpx.post(emu.url(REGISTER_PATH), json={"device_id": device}, headers={"x-msh-device-id": device})
    assert answer.status_code == 200 and answer.cookies.get("kimi-auth") == answer.json()["access_token"]
    assert chat(emu, answer.json()["access_token"], chat_body("hi"))[0] == 200


def test_it_can_refuse_prompt_described_tools(emu: KimiEmulator) -> None:
    token, _ = access(emu, emu.mint_refresh_token("u1"))
    emu.refuse_tools = True
    parsed = objects(chat(emu, token, chat_body("system: call tools like <tool_call_abc123>...\n\nuser: hi"))[1])
    text = "".join(p["block"]["text"]["content"] for p in parsed if p.get("mask", "").startswith("block.text"))
    assert text == TOOL_REFUSAL


def test_the_catalog_answers_when_set_and_needs_a_token(emu: KimiEmulator) -> None:
    token, _ = access(emu, emu.mint_refresh_token("u1"))
    assert httpx.post(emu.url(CATALOG_PATH), json={}).status_code == 401
    assert httpx.post(emu.url(CATALOG_PATH), json={}, headers={"Authorization": f"Bearer {token}"}).status_code == 503
    emu.catalog = [{"displayName": "K2.6", "scenario": "SCENARIO_K2D5", "model": "k2d6-chat"}]
    listed = httpx.post(emu.url(CATALOG_PATH), json={}, headers={"Authorization": f"Bearer {token}"}).json()
    assert listed["availableModels"][0]["model"] == "k2d6-chat"
