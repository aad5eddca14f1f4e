"""Kiro logins through the real gateway: refresh (ahead of expiry and on 403), rotation on disk, profiles, errors."""

from __future__ import annotations

import concurrent.futures
import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.kiro_helpers import credentials, kiro_settings, wait_for
from tests.harness import GatewayServer
from tests.providers.kiro.test_source import bind_mounted
from tests.upstreams import KiroEmulator
from tests.upstreams.kiro import DEFAULT_ARN
from tests.upstreams.kiro_rules import IMPROPER

StartGateway = Callable[..., GatewayServer]
MODEL = "claude-sonnet-4"
HI: list[Any] = [{"role": "user", "content": "hi"}]


def ask(gateway: GatewayServer, **extra: Any) -> str:
    reply = gateway.openai().chat.completions.create(model=MODEL, messages=HI, **extra)
    return reply.choices[0].message.content or ""


@pytest.mark.parametrize("kind", ["social", "idc"])
def test_an_expired_access_token_is_refreshed_once_and_the_rotated_token_is_on_disk(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path, kind: str,
) -> None:
    account = kiro_emu.add_account(kind)
    path = tmp_path / "kiro-auth-token.json"
    write = kiro_emu.write_idc_files if kind == "idc" else kiro_emu.write_social_file
    write(path, account, expired=True)
    path.chmod(0o600)
    issued = account.refresh_token
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path, kiro_profile_arn=DEFAULT_ARN))
    assert ask(gateway) and ask(gateway)
    assert len(kiro_emu.refresh_calls) == 1 and kiro_emu.refresh_calls[0]["refreshToken"] == issued
    on_disk = json.loads(path.read_text())
    assert on_disk["refreshToken"] == account.refresh_token != issued and on_disk["accessToken"] == account.access_token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [r.token for r in kiro_emu.chat_requests] == [account.access_token] * 2
    for secret in [*account.issued, account.access_token]:
        assert secret not in gateway.logs.text


def test_a_refused_bearer_is_renewed_once_even_under_concurrent_requests(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path,
) -> None:
    account = kiro_emu.add_account()
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", account)
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))
    assert ask(gateway)
    kiro_emu.expire(account)  # 403 "bearer token ... invalid" until refreshed
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: ask(gateway), range(4)))
    assert all(answers) and len(kiro_emu.refresh_calls) == 1
    assert json.loads(path.read_text())["refreshToken"] == account.refresh_token
    [entry] = credentials(gateway)
    assert entry["state"] == "active" and entry["failures"] == 0


def test_a_bind_mounted_token_file_gets_the_rotated_token(kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path) -> None:
    account = kiro_emu.add_account()
    host_file = kiro_emu.write_social_file(tmp_path / "host" / "kiro-auth-token.json", account, expired=True)
    mounted = tmp_path / "container" / ".aws" / "sso" / "cache" / "kiro-auth-token.json"
    mounted.parent.mkdir(parents=True)
    with bind_mounted(host_file, mounted):
        gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=mounted))
        assert ask(gateway)
        assert json.loads(mounted.read_text())["refreshToken"] == account.refresh_token
        gateway.stop()
    assert json.loads(host_file.read_text())["refreshToken"] == account.refresh_token


def test_invalid_grant_disables_that_login_and_the_others_carry_on(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path,
) -> None:
    dead, alive = kiro_emu.add_account(), kiro_emu.add_account()
    dead_path = kiro_emu.write_social_file(tmp_path / "logins" / "dead.json", dead, expired=True)
    kiro_emu.write_social_file(tmp_path / "logins" / "alive.json", alive)
    dead.refresh_token = "aor-killed-by-a-login-elsewhere"
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=tmp_path / "none.json",
                                            kiro_token_files=str(tmp_path / "logins" / "*.json")))
    wait_for(lambda: any(c["state"] == "disabled" for c in credentials(gateway)))
    assert ask(gateway) and ask(gateway)
    states = {c["state"]: c for c in credentials(gateway)}
    assert set(states) == {"disabled", "active"} and "log in to Kiro again" in states["disabled"]["disabled_reason"]
    assert json.loads(dead_path.read_text())["refreshToken"] != "aor-killed-by-a-login-elsewhere"  # file untouched
    assert {r.token for r in kiro_emu.chat_requests} == {alive.access_token}


def test_a_login_the_ide_rewrites_is_picked_up_without_a_refresh(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path,
) -> None:
    account = kiro_emu.add_account()
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", account)
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path, tokens_reload_interval=0.1))
    assert ask(gateway)
    kiro_emu.expire(account)
    kiro_emu.write_social_file(path, account)  # the user logged in again in the IDE
    wait_for(lambda: gateway.runtime.pools["kiro"].entries[0].credential.secret.reveal() == account.access_token)
    assert ask(gateway) and kiro_emu.refresh_calls == []


def test_an_api_key_is_sent_as_the_bearer_with_its_token_type(kiro_emu: KiroEmulator, start_gateway: StartGateway) -> None:
    key = kiro_emu.add_api_key()
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_api_key=f"{key}, ksk_unused_second_key_0123456789",
                                            kiro_profile_arn=DEFAULT_ARN))
    assert "2 API key" in next(line for line in gateway.runtime.report if line.startswith("kiro:"))
    answers = [ask(gateway) for _ in range(2)]  # round robin: one is refused and disabled, the other serves
    assert all(answers)
    used = [r for r in kiro_emu.chat_requests if r.token == key]
    assert used and all(r.headers["tokentype"] == "API_KEY" for r in used)
    assert key not in gateway.logs.text


def test_the_original_tools_environment_tokens(kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path) -> None:
    account = kiro_emu.add_account()
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_access_token=account.access_token,
                                            kiro_refresh_token=account.refresh_token, kiro_profile_arn=DEFAULT_ARN))
    assert ask(gateway)
    kiro_emu.expire(account)
    assert ask(gateway) and len(kiro_emu.refresh_calls) == 1
    [saved] = (tmp_path / "data" / "kiro").glob("*.json")
    assert json.loads(saved.read_text())["refreshToken"] == account.refresh_token  # survives a restart


@pytest.mark.parametrize("rest", [True, False])
def test_an_idc_login_without_a_profile_looks_it_up_once(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path, rest: bool,
) -> None:
    account = kiro_emu.add_account("idc", profile_arn="arn:aws:codewhisperer:us-east-1:111122223333:profile/IDC")
    path = kiro_emu.write_idc_files(tmp_path / "kiro-auth-token.json", account)
    kiro_emu.profiles_rest = rest  # False: only the older JSON-RPC form answers
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))
    assert ask(gateway) and ask(gateway)
    assert [r.json["profileArn"] for r in kiro_emu.chat_requests] == [account.profile_arn] * 2
    lookups = kiro_emu.requests_to("/ListAvailableProfiles") + kiro_emu.requests_to("/")
    assert len(lookups) == (1 if rest else 2) and kiro_emu.rejections == []


def test_a_login_with_no_profile_anywhere_says_to_set_kiro_profile_arn(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path,
) -> None:
    account = kiro_emu.add_account("idc")
    path = kiro_emu.write_idc_files(tmp_path / "kiro-auth-token.json", account)
    kiro_emu.profiles_listed = False
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))
    with pytest.raises(openai.APIStatusError) as caught:
        ask(gateway)
    assert caught.value.status_code == 503 and "KIRO_PROFILE_ARN" in caught.value.message
    assert kiro_emu.chat_requests == []  # never sent without a profile
    assert "KIRO_PROFILE_ARN" in credentials(gateway)[0]["disabled_reason"]


def test_a_request_without_a_profile_arn_is_what_kiro_refuses(kiro_emu: KiroEmulator) -> None:
    """The emulator's side of the rule above: the gateway never relies on Kiro taking a request without one."""
    account = kiro_emu.add_account()
    body = {"conversationState": {"chatTriggerType": "MANUAL", "currentMessage": {"userInputMessage": {
        "content": "hi", "modelId": "claude-sonnet-4", "origin": "AI_EDITOR"}}}}
    response = httpx.post(kiro_emu.url("/generateAssistantResponse"), json=body,
                          headers={"Authorization": f"Bearer {account.access_token}"})
    assert response.status_code == 400 and response.json()["message"] == "profileArn is required for this request."


# --- the notes' error table --------------------------------------------------------------------


@pytest.fixture
def gateway(kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path) -> GatewayServer:
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", kiro_emu.add_account())
    return start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))


def test_a_400_is_the_requests_fault_and_never_cools_the_credential(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.fail_next(1, 400, IMPROPER)
    with pytest.raises(openai.BadRequestError) as caught:
        ask(gateway)
    assert "Improperly formed request" in caught.value.message and len(kiro_emu.chat_requests) == 1
    [entry] = credentials(gateway)
    assert entry["state"] == "active" and entry["failures"] == 0 and entry["cooldown_until"] is None
    assert ask(gateway)


def test_too_long_is_context_length_exceeded(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.fail_next(1, 400, {"message": "Input is too long.", "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"})
    with pytest.raises(openai.BadRequestError) as caught:
        ask(gateway)
    assert caught.value.code == "context_length_exceeded" and caught.value.type == "invalid_request_error"


def test_an_exhausted_monthly_quota_is_insufficient_quota(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.fail_next(1, 402, {"message": "You have reached the limit.", "reason": "MONTHLY_REQUEST_COUNT"})
    with pytest.raises(openai.RateLimitError) as caught:
        ask(gateway)
    assert caught.value.status_code == 429 and caught.value.code == "insufficient_quota"
    [entry] = credentials(gateway)
    assert entry["state"] == "cooling" and entry["cooldown_until"] > time.time() + 3600  # until next month


def test_capacity_and_suspicious_activity_limits_rest_the_account_long(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.fail_next(1, 429, {"message": "Too much traffic", "reason": "INSUFFICIENT_MODEL_CAPACITY"})
    with pytest.raises(openai.RateLimitError):
        ask(gateway)
    [entry] = credentials(gateway)
    assert entry["cooldown_until"] > time.time() + 1700


def test_a_suspended_account_is_disabled_without_a_refresh(gateway: GatewayServer, kiro_emu: KiroEmulator) -> None:
    kiro_emu.fail_next(1, 403, {"message": "Your account temporarily is suspended due to a violation of terms."})
    with pytest.raises(openai.APIStatusError):
        ask(gateway)
    [entry] = credentials(gateway)
    assert entry["state"] == "disabled" and "suspended" in entry["disabled_reason"]
    assert kiro_emu.refresh_calls == []


# --- profiles: every lookup form of the notes, and the refresh answer --------------------------


@pytest.mark.parametrize("target", ["AmazonCodeWhispererService.ListAvailableProfiles", "AmazonCodeWhispererService.ListProfiles",
                                    "AmazonCodeWhispererService.ListAvailableCustomizations"])
def test_an_idc_profile_is_found_through_whichever_json_rpc_operation_the_service_knows(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path, target: str,
) -> None:
    account = kiro_emu.add_account("idc", profile_arn="arn:aws:codewhisperer:us-east-1:111122223333:profile/IDC")
    path = kiro_emu.write_idc_files(tmp_path / "kiro-auth-token.json", account)
    kiro_emu.profiles_rest, kiro_emu.rpc_targets = False, {target}  # the others: 400 UnknownOperationException
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))
    assert ask(gateway) and ask(gateway)
    assert [r.json["profileArn"] for r in kiro_emu.chat_requests] == [account.profile_arn] * 2
    rpc = kiro_emu.requests_to("/")
    assert rpc[-1].headers["x-amz-target"] == target and rpc[-1].headers["Content-Type"] == "application/x-amz-json-1.0"
    assert rpc[-1].json == {"origin": "AI_EDITOR"} and credentials(gateway)[0]["failures"] == 0


def test_a_social_login_without_a_profile_takes_it_from_its_refresh_answer(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path,
) -> None:
    account = kiro_emu.add_account()
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", account, with_arn=False)
    kiro_emu.profiles_rest, kiro_emu.rpc_targets = False, set()  # no lookup form answers a social login
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))
    assert ask(gateway) and ask(gateway)
    assert [r.json["profileArn"] for r in kiro_emu.chat_requests] == [account.profile_arn] * 2
    assert len(kiro_emu.refresh_calls) == 1 and json.loads(path.read_text())["profileArn"] == account.profile_arn
    [entry] = credentials(gateway)
    assert entry["state"] == "active" and entry["failures"] == 0


# --- external identity providers (Entra, Okta) ---------------------------------------------------


def test_an_external_idp_login_is_refreshed_at_its_token_endpoint_and_sends_its_token_type(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path,
) -> None:
    account = kiro_emu.add_account("external_idp")
    path = kiro_emu.write_external_idp_file(tmp_path / "kiro-auth-token.json", account, expired=True)
    path.chmod(0o600)
    issued = account.refresh_token
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))
    assert ask(gateway) and ask(gateway)
    [refresh] = kiro_emu.refresh_calls
    assert refresh == {"path": "/oauth2/v2.0/token", "grant_type": "refresh_token", "client_id": account.client_id,
                       "refresh_token": issued, "scope": "openid offline_access"}
    assert all(r.headers["tokentype"] == "EXTERNAL_IDP" and r.token == account.access_token for r in kiro_emu.chat_requests)
    on_disk = json.loads(path.read_text())
    assert on_disk["refreshToken"] == account.refresh_token != issued and on_disk["accessToken"] == account.access_token
    assert on_disk["tokenEndpoint"] == kiro_emu.url("/oauth2/v2.0/token") and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(path.parent.glob(f".{path.name}.*.tmp"))  # written whole, by a rename
    for secret in account.issued:
        assert secret not in gateway.logs.text


def test_an_external_idp_token_endpoint_on_another_host_than_its_issuer_is_never_sent_the_token(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path,
) -> None:
    account = kiro_emu.add_account("external_idp")
    path = kiro_emu.write_external_idp_file(tmp_path / "kiro-auth-token.json", account, expired=True)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "issuerUrl": "https://login.example.com/tenant/v2.0"}))
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))
    wait_for(lambda: credentials(gateway)[0]["state"] == "disabled")
    assert "tokenEndpoint on another host than its issuerUrl" in credentials(gateway)[0]["disabled_reason"]
    assert kiro_emu.refresh_calls == [] and json.loads(path.read_text()) == {**data, "issuerUrl": "https://login.example.com/tenant/v2.0"}
