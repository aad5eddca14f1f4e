"""The Kiro emulator itself: real frames (as botocore decodes them), its rules, its logins."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from tests.upstreams import KiroEmulator
from tests.upstreams.kiro import CHAT_PATH, DEFAULT_ARN
from tests.upstreams.kiro_frames import KiroReply, sign


def chat_body(**message: Any) -> dict[str, Any]:
    current = {"content": "hi", "modelId": "claude-sonnet-4", "origin": "AI_EDITOR", **message}
    return {"conversationState": {"chatTriggerType": "MANUAL", "currentMessage": {"userInputMessage": current}},
            "profileArn": DEFAULT_ARN}


def post(emu: KiroEmulator, body: Any, token: str | None, **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(emu.url(CHAT_PATH), json=body, headers={**auth, **headers}, timeout=10)


def messages(raw: bytes) -> list[tuple[dict[str, Any], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return [(dict(m.headers), m.payload) for m in buffer]


def test_frames_are_what_botocore_decodes(kiro_emu: KiroEmulator) -> None:
    account = kiro_emu.add_account()
    kiro_emu.reply = KiroReply(text="Hello 春天", reasoning=["think"], tool_calls=[{"name": "f", "input": {"a": 1}}])
    response = post(kiro_emu, chat_body(userInputMessageContext={"tools": [{"toolSpecification": {
        "name": "f", "description": "d", "inputSchema": {"json": {"type": "object", "properties": {}}}}}]}),
        account.access_token)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/vnd.amazon.eventstream")
    decoded = messages(response.content)
    types = [h[":event-type"] for h, _ in decoded]
    assert types == ["reasoningContentEvent"] * 4 + ["assistantResponseEvent"] * 3 + ["toolUseEvent"] * 4 + [
        "meteringEvent", "contextUsageEvent"]  # "think" in 3 pieces and its signature; the tool's input in 3, then stop
    assert all(h[":message-type"] == "event" and h[":content-type"] == "application/json" for h, _ in decoded)
    assert b"".join(p for h, p in decoded if h[":event-type"] == "assistantResponseEvent").count(b"content") == 3


def test_split_writes_carry_the_same_frames(kiro_emu: KiroEmulator) -> None:
    account = kiro_emu.add_account()
    kiro_emu.reply = KiroReply(text="Split at every byte 🌸")
    whole = post(kiro_emu, chat_body(), account.access_token).content
    kiro_emu.split_writes, kiro_emu.split_size = True, 1
    with httpx.stream("POST", kiro_emu.url(CHAT_PATH), json=chat_body(),
                      headers={"Authorization": f"Bearer {account.access_token}"}, timeout=10) as response:
        split = b"".join(response.iter_raw())
    assert messages(split) == messages(whole)


@pytest.mark.parametrize("where", ["prelude", "message"])
def test_a_bad_crc_is_one_botocore_refuses(kiro_emu: KiroEmulator, where: str) -> None:
    account = kiro_emu.add_account()
    kiro_emu.corrupt, kiro_emu.corrupt_frame = where, 0
    raw = post(kiro_emu, chat_body(), account.access_token).content
    with pytest.raises(ChecksumMismatch):
        messages(raw)


def test_exceptions_and_truncation(kiro_emu: KiroEmulator) -> None:
    account = kiro_emu.add_account()
    kiro_emu.truncate = True
    types = [h[":event-type"] for h, _ in messages(post(kiro_emu, chat_body(), account.access_token).content)]
    assert "meteringEvent" not in types and "contextUsageEvent" not in types
    kiro_emu.truncate, kiro_emu.exception, kiro_emu.exception_after = False, ("ThrottlingException", "slow down"), 1
    decoded = messages(post(kiro_emu, chat_body(), account.access_token).content)
    assert decoded[-1][0][":message-type"] == "exception" and decoded[-1][0][":exception-type"] == "ThrottlingException"


def test_403_until_refreshed_and_refresh_tokens_rotate(kiro_emu: KiroEmulator) -> None:
    account = kiro_emu.add_account()
    old_access, old_refresh = account.access_token, account.refresh_token
    kiro_emu.expire(account)
    refused = post(kiro_emu, chat_body(), old_access)
    assert refused.status_code == 403 and "bearer token included in the request is invalid" in refused.text
    answer = httpx.post(kiro_emu.url("/refreshToken"), json={"refreshToken": old_refresh}).json()
    assert answer["refreshToken"] != old_refresh and answer["profileArn"] == DEFAULT_ARN and answer["expiresIn"] == 3600
    assert post(kiro_emu, chat_body(), answer["accessToken"]).status_code == 200
    reused = httpx.post(kiro_emu.url("/refreshToken"), json={"refreshToken": old_refresh})
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


def test_idc_refresh_needs_the_client_registration(kiro_emu: KiroEmulator) -> None:
    account = kiro_emu.add_account("idc")
    body = {"clientId": account.client_id, "clientSecret": "wrong", "refreshToken": account.refresh_token, "grantType": "refresh_token"}
    assert httpx.post(kiro_emu.url("/token"), json=body).json()["error"] == "invalid_client"
    body["clientSecret"] = account.client_secret
    answer = httpx.post(kiro_emu.url("/token"), json=body).json()
    assert answer["accessToken"] == account.access_token and answer["tokenType"] == "Bearer"


def test_api_keys_need_their_token_type(kiro_emu: KiroEmulator) -> None:
    key = kiro_emu.add_api_key()
    assert post(kiro_emu, chat_body(), key).status_code == 403
    assert post(kiro_emu, chat_body(), key, tokentype="API_KEY").status_code == 200


@pytest.mark.parametrize(("body", "rule"), [
    ({**chat_body(), "profileArn": None}, "no profileArn"),
    ({"conversationState": {"currentMessage": {"userInputMessage": {"content": "hi", "modelId": "claude-sonnet-4"}},
                            "history": [{"assistantResponseMessage": {"content": "first"}}]}, "profileArn": DEFAULT_ARN},
     "turn 0 breaks the alternation"),
    ({"conversationState": {"currentMessage": {"userInputMessage": {"content": "hi", "modelId": "claude-sonnet-4"}},
                            "history": [{"userInputMessage": {"content": "a"}}, {"userInputMessage": {"content": "b"}}]},
      "profileArn": DEFAULT_ARN}, "turn 1 breaks the alternation"),
    (chat_body(content="  "), "empty content"),
    (chat_body(modelId="gpt-4"), "unknown model"),
    ({"conversationState": {"currentMessage": {"userInputMessage": {
        "content": "r", "modelId": "claude-sonnet-4", "userInputMessageContext": {
            "tools": [{"toolSpecification": {"name": "f", "description": "d", "inputSchema": {"json": {"type": "object"}}}}],
            "toolResults": [{"toolUseId": "b", "content": [{"text": "2"}], "status": "success"},
                            {"toolUseId": "a", "content": [{"text": "1"}], "status": "success"}]}}},
        "history": [{"userInputMessage": {"content": "q"}}, {"assistantResponseMessage": {"content": "x", "toolUses": [
            {"toolUseId": "a", "name": "f", "input": {}}, {"toolUseId": "b", "name": "f", "input": {}}]}}]},
      "profileArn": DEFAULT_ARN}, "expected ['a', 'b'] in that order"),
    (chat_body(userInputMessageContext={"tools": [{"toolSpecification": {"name": "f", "description": "d", "inputSchema": {
        "json": {"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}}}}]}), "uses anyOf"),
    (chat_body(userInputMessageContext={"tools": [{"toolSpecification": {"name": "x" * 65, "description": "d", "inputSchema": {
        "json": {"type": "object"}}}}]}), "invalid, too long or repeated"),
    ({"conversationState": {"currentMessage": {"userInputMessage": {"content": "hi", "modelId": "claude-sonnet-4"}},
                            "history": [{"userInputMessage": {"content": "q"}}, {"assistantResponseMessage": {
                                "content": "a", "reasoningContent": {"reasoningText": {"text": "t", "signature": "forged"}}}}]},
      "profileArn": DEFAULT_ARN}, "signature Kiro did not make"),
])
def test_improperly_formed_requests_are_refused(kiro_emu: KiroEmulator, body: dict[str, Any], rule: str) -> None:
    account = kiro_emu.add_account()
    response = post(kiro_emu, body, account.access_token)
    assert response.status_code == 400 and rule in kiro_emu.rejections[-1]


def test_a_replayed_signature_the_emulator_made_is_taken(kiro_emu: KiroEmulator) -> None:
    account = kiro_emu.add_account()
    body = {"conversationState": {"currentMessage": {"userInputMessage": {"content": "hi", "modelId": "claude-sonnet-4"}},
                                  "history": [{"userInputMessage": {"content": "q"}}, {"assistantResponseMessage": {
                                      "content": "a", "reasoningContent": {"reasoningText": {"text": "t", "signature": sign("t")}}}}]},
            "profileArn": DEFAULT_ARN}
    assert post(kiro_emu, body, account.access_token).status_code == 200


def test_the_catalog_and_profiles(kiro_emu: KiroEmulator) -> None:
    account = kiro_emu.add_account()
    headers = {"Authorization": f"Bearer {account.access_token}"}
    models = httpx.get(kiro_emu.url("/ListAvailableModels"), params={"origin": "AI_EDITOR"}, headers=headers).json()
    assert "claude-sonnet-4.5" in [m["modelId"] for m in models["models"]]
    profiles = httpx.post(kiro_emu.url("/ListAvailableProfiles"), json={}, headers=headers).json()
    assert profiles["profiles"][0]["arn"] == DEFAULT_ARN
