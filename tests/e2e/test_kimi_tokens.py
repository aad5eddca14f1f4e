"""Kimi's rotating refresh tokens: on disk after every refresh, never lost to a crash, kept across restarts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.harness import API_KEY, GatewayProcess, GatewayServer
from tests.pool.helpers import admin
from tests.upstreams import KimiEmulator
from tests.upstreams.kimi import CHAT_PATH, LEGACY_REFRESH_PATH, REFRESH_PATH

Start = Callable[..., GatewayServer]
HI = [{"role": "user", "content": "你好"}]


def tokens_in(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_refresh_rotates_the_token_on_disk_keeping_every_other_line(kimi_emu: KimiEmulator, kimi_gateway: Start,
                                                                       tmp_path: Path) -> None:
    first, second = kimi_emu.mint_refresh_token("user-a"), kimi_emu.mint_refresh_token("user-b")
    path = tmp_path / "kimi-tokens.txt"
    path.write_text(f"# work account\n{first}\n\n# home account\n{second}\n")
    kimi_gateway(kimi_tokens_file=path).openai().chat.completions.create(model="kimi", messages=HI)
    # Both accounts are renewed at start; the one the chat did not use may still be on its way on a loaded machine.
    assert wait_for(lambda: first not in path.read_text() and second not in path.read_text())
    lines = path.read_text().splitlines()
    assert lines[0] == "# work account" and lines[2] == "" and lines[3] == "# home account"
    new_first, new_second = lines[1], lines[4]
    assert new_first not in (first, second) and new_second not in (first, second)
    assert kimi_emu.refresh_token_alive(new_first) and kimi_emu.refresh_token_alive(new_second)
    assert not kimi_emu.refresh_token_alive(first) and not kimi_emu.refresh_token_alive(second)
    assert kimi_emu.user_of(new_first) == "user-a" and oct(path.stat().st_mode & 0o777) == "0o600"


def test_an_access_token_refused_with_401_is_refreshed_once_and_the_request_answered(
        kimi_emu: KimiEmulator, kimi_gateway: Start, tmp_path: Path) -> None:
    client = kimi_gateway().openai()
    client.chat.completions.create(model="kimi", messages=HI)
    path = tmp_path / "kimi-tokens.txt"
    before, refreshes = tokens_in(path), kimi_emu.refresh_calls
    kimi_emu.expire_access_tokens()  # 401 until refreshed
    reply = client.chat.completions.create(model="kimi", messages=HI)
    assert reply.choices[0].message.content
    assert kimi_emu.refresh_calls == refreshes + 1 and tokens_in(path) != before
    statuses = [r for r in kimi_emu.requests_to(CHAT_PATH)]
    assert len(statuses) == 3  # the first answer, the refused attempt, the retry after the refresh


def test_the_connect_refresh_falls_back_to_the_legacy_one(kimi_emu: KimiEmulator, kimi_gateway: Start,
                                                          tmp_path: Path) -> None:
    kimi_emu.connect_refresh = False
    kimi_gateway().openai().chat.completions.create(model="kimi", messages=HI)
    assert kimi_emu.legacy_refresh_calls == 1
    [token] = tokens_in(tmp_path / "kimi-tokens.txt")
    assert kimi_emu.refresh_token_alive(token)


def test_a_dead_refresh_token_disables_the_account_saying_to_log_in_again(kimi_emu: KimiEmulator, kimi_gateway: Start,
                                                                         tmp_path: Path) -> None:
    path = tmp_path / "kimi-tokens.txt"
    path.write_text(kimi_emu.mint_refresh_token("user-a") + "\n")
    dead = tokens_in(path)[0]
    kimi_emu._rotate(dead, rotate=True)  # used elsewhere: dead now
    with pytest.raises(openai.APIStatusError) as caught:
        kimi_gateway(kimi_tokens_file=path).openai().chat.completions.create(model="kimi", messages=HI)
    assert caught.value.status_code == 503
    assert "log in to kimi.com again" in str(caught.value.body) and dead not in str(caught.value.body)
    assert tokens_in(path) == [dead]  # nothing was lost or overwritten


def test_an_env_token_rotates_into_the_data_dir_and_a_restart_uses_it(kimi_emu: KimiEmulator, kimi_gateway: Start,
                                                                         tmp_path: Path) -> None:
    original = kimi_emu.mint_refresh_token("user-env")
    first = kimi_gateway(kimi_refresh_token=original)
    first.openai().chat.completions.create(model="kimi", messages=HI, user="u")
    first.stop()
    assert not kimi_emu.refresh_token_alive(original)
    state = (tmp_path / "data" / "pool-state.json").read_text()
    assert original not in state
    [kept] = tokens_in(tmp_path / "data" / "kimi-env-tokens.txt")
    assert kimi_emu.refresh_token_alive(kept)
    second = kimi_gateway(kimi_refresh_token=original)  # the same, now dead, value in the environment
    reply = second.openai().chat.completions.create(model="kimi", messages=HI)
    assert reply.choices[0].message.content
    assert original not in second.logs.text and original not in first.logs.text


def kimi_credentials(gateway: GatewayServer) -> list[dict[str, Any]]:
    """The Kimi accounts as the admin API shows them."""
    with admin(gateway) as http:
        return list(http.get("/admin/pools").json()["data"]["providers"]["kimi"]["credentials"])


def test_a_firewall_challenge_on_the_chat_is_a_502_naming_it_and_spends_no_refresh_token(
        kimi_emu: KimiEmulator, kimi_gateway: Start, tmp_path: Path) -> None:
    gateway = kimi_gateway()
    client = gateway.openai()
    client.chat.completions.create(model="kimi", messages=HI)  # renewed at start, serving
    path = tmp_path / "kimi-tokens.txt"
    before, refreshes = tokens_in(path), kimi_emu.refresh_calls + kimi_emu.legacy_refresh_calls
    kimi_emu.challenge(CHAT_PATH, times=10)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="kimi", messages=HI)
    assert caught.value.status_code == 502
    assert "firewall/bot challenge page (HTTP 403), not an API answer" in str(caught.value.body)
    [account] = kimi_credentials(gateway)
    assert account["state"] == "active" and account["disabled_reason"] is None
    assert kimi_emu.refresh_calls + kimi_emu.legacy_refresh_calls == refreshes
    assert tokens_in(path) == before and kimi_emu.refresh_token_alive(before[0])
    kimi_emu.challenges.clear()
    assert client.chat.completions.create(model="kimi", messages=HI).choices[0].message.content


def test_a_firewall_challenge_on_the_refresh_keeps_the_refresh_token_and_the_account(
        kimi_emu: KimiEmulator, kimi_gateway: Start, tmp_path: Path) -> None:
    path = tmp_path / "kimi-tokens.txt"
    token = kimi_emu.mint_refresh_token("user-a")
    path.write_text(f"# mine\n{token}\n")
    kimi_emu.challenge(REFRESH_PATH, times=100)
    kimi_emu.challenge(LEGACY_REFRESH_PATH, times=100)
    gateway = kimi_gateway(kimi_tokens_file=path)
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(model="kimi", messages=HI)
    assert caught.value.status_code == 503 and "refused the refresh token" not in str(caught.value.body)
    assert wait_for(lambda: (kimi_credentials(gateway)[0]["last_error"] or "").startswith("renewal failed"))
    [account] = kimi_credentials(gateway)
    assert account["state"] != "disabled" and "challenge page" in account["last_error"]
    assert path.read_text() == f"# mine\n{token}\n" and kimi_emu.refresh_token_alive(token)
    assert kimi_emu.chat_calls == []


@pytest.mark.parametrize("where", ["tokens_file", "env"])
def test_an_access_token_given_as_the_credential_is_used_as_it_is_and_never_refreshed(
        kimi_emu: KimiEmulator, kimi_gateway: Start, tmp_path: Path, where: str) -> None:
    kimi_emu.access_ttl = 3600
    access = kimi_emu.mint_access_token("user-a")  # the kimi-auth cookie's JWT (typ: access)
    path = tmp_path / "kimi-tokens.txt"
    path.write_text(f"# from the browser\n{access}\n")
    gateway = kimi_gateway(kimi_tokens_file=path) if where == "tokens_file" else kimi_gateway(kimi_refresh_token=access)
    reply = gateway.openai().chat.completions.create(model="kimi", messages=HI)
    assert reply.choices[0].message.content
    assert [(call.user, call.token) for call in kimi_emu.chat_calls] == [("user-a", access)]
    assert kimi_emu.refresh_calls == kimi_emu.legacy_refresh_calls == 0
    [account] = kimi_credentials(gateway)
    assert account["state"] == "active" and account["expires_at"] > time.time() + 3000
    assert path.read_text() == f"# from the browser\n{access}\n"
    if where == "env":
        assert tokens_in(tmp_path / "data" / "kimi-env-tokens.txt") == [access]


def test_an_expired_access_token_given_as_the_credential_says_a_refresh_token_is_needed(
        kimi_emu: KimiEmulator, kimi_gateway: Start, tmp_path: Path) -> None:
    kimi_emu.access_ttl = -60
    access = kimi_emu.mint_access_token("user-a")
    path = tmp_path / "kimi-tokens.txt"
    path.write_text(f"{access}\n")
    gateway = kimi_gateway(kimi_tokens_file=path)
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(model="kimi", messages=HI)
    assert caught.value.status_code == 503
    assert "given an access token" in str(caught.value.body) and "refresh_token" in str(caught.value.body)
    assert wait_for(lambda: (kimi_credentials(gateway)[0]["last_error"] or "").startswith("renewal failed"))
    [account] = kimi_credentials(gateway)
    assert account["state"] == "expired" and account["disabled_reason"] is None
    assert "expired at" in account["last_error"] and "an access token cannot be renewed" in account["last_error"]
    assert "an access token cannot be renewed: put the account's refresh_token" in gateway.logs.text
    assert kimi_emu.refresh_calls == kimi_emu.legacy_refresh_calls == 0 and kimi_emu.chat_calls == []
    assert tokens_in(path) == [access]


def process_env(kimi_emu: KimiEmulator, tmp_path: Path, tokens: Path) -> dict[str, str]:
    return {"K2THINK_ENABLED": "false", "KIMI_ENABLED": "true", "KIMI_BASE_URL": kimi_emu.base_url,
            "KIMI_AUTH_URL": kimi_emu.base_url, "KIMI_TOKENS_FILE": str(tokens), "DATA_DIR": str(tmp_path / "data"),
            "VALID_API_KEY": API_KEY, "REQUEST_TIMEOUT": "5", "LOG_LEVEL": "INFO",
            "PYTHONPATH": os.environ.get("PYTHONPATH", "")}


def chat(process: GatewayProcess, **body: Any) -> dict[str, Any]:
    response = httpx.post(process.base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                          json={"model": "kimi", **body}, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_kill_during_a_refresh_loses_no_account(kimi_emu: KimiEmulator, tmp_path: Path) -> None:
    path = tmp_path / "kimi-tokens.txt"
    original = kimi_emu.mint_refresh_token("user-a")
    path.write_text(f"# mine\n{original}\n")
    kimi_emu.refresh_gate = threading.Event()  # the refresh at start waits here, unanswered
    env = {**process_env(kimi_emu, tmp_path, path), "REQUEST_TIMEOUT": "30"}
    starting = GatewayProcess(env, tmp_path)
    with starting.log_path.open("ab") as log:  # not waiting for /health: killed while starting, mid-refresh
        child = subprocess.Popen(starting.command, cwd=tmp_path, env=starting.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: kimi_emu.refresh_calls >= 1)
        time.sleep(0.2)  # the refresh request is held upstream now
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    assert path.read_text() == f"# mine\n{original}\n" and kimi_emu.refresh_token_alive(original)
    kimi_emu.refresh_gate.set()
    restarted = GatewayProcess(process_env(kimi_emu, tmp_path, path), tmp_path).start()
    try:
        assert chat(restarted, messages=HI)["choices"][0]["message"]["content"]
    finally:
        restarted.stop()
    [rotated] = tokens_in(path)
    assert rotated != original and kimi_emu.refresh_token_alive(rotated) and not kimi_emu.refresh_token_alive(original)
    assert path.read_text().startswith("# mine\n")


def test_a_kill_right_after_a_refresh_leaves_the_rotated_token_on_disk(kimi_emu: KimiEmulator, tmp_path: Path) -> None:
    path = tmp_path / "kimi-tokens.txt"
    path.write_text(kimi_emu.mint_refresh_token("user-a") + "\n")
    process = GatewayProcess(process_env(kimi_emu, tmp_path, path), tmp_path).start()
    try:
        kimi_emu.hang_mid_stream, kimi_emu.interrupt_after_events = True, 4  # mid-answer, after the refresh
        def ask() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the gateway is killed under it
                httpx.post(process.base_url + "/v1/chat/completions", timeout=30,
                           headers={"Authorization": f"Bearer {API_KEY}"}, json={"model": "kimi", "messages": HI})

        threading.Thread(target=ask, daemon=True).start()
        assert wait_for(lambda: len(kimi_emu.chat_calls) == 1)
        assert process.proc is not None
        os.kill(process.proc.pid, signal.SIGKILL)
        process.proc.wait(timeout=10)
    finally:
        process.stop()
    kimi_emu.hang_mid_stream = False
    [token] = tokens_in(path)
    assert kimi_emu.refresh_token_alive(token)
    restarted = GatewayProcess(process_env(kimi_emu, tmp_path, path), tmp_path).start()
    try:
        assert chat(restarted, messages=HI)["choices"][0]["message"]["content"]
    finally:
        restarted.stop()


def test_a_restart_keeps_sessions_and_tokens(kimi_emu: KimiEmulator, tmp_path: Path) -> None:
    path = tmp_path / "kimi-tokens.txt"
    path.write_text(kimi_emu.mint_refresh_token("user-a") + "\n")
    history = [{"role": "user", "content": "我叫张三，来自北京"}]
    first = GatewayProcess(process_env(kimi_emu, tmp_path, path), tmp_path).start()
    try:
        answer = chat(first, messages=history, user="zhang_san_001")["choices"][0]["message"]["content"]
    finally:
        first.stop()
    history += [{"role": "assistant", "content": answer}, {"role": "user", "content": "我刚才说我来自哪里？"}]
    second = GatewayProcess(process_env(kimi_emu, tmp_path, path), tmp_path).start()
    try:
        reply = chat(second, messages=history, user="zhang_san_001")
    finally:
        second.stop()
    assert "北京" in reply["choices"][0]["message"]["content"]
    one, two = kimi_emu.chat_calls
    assert not two.new_chat and two.chat_id == one.chat_id and two.text == "我刚才说我来自哪里？"
    [token] = tokens_in(path)
    assert kimi_emu.refresh_token_alive(token)
    state = json.loads((tmp_path / "data" / "pool-state.json").read_text())
    assert any(key.startswith("sessions:") for key in state["keys"])
    assert "北京" not in json.dumps(state, ensure_ascii=False)  # ids and a hash, never the conversation
    assert kimi_emu.requests_to(REFRESH_PATH)  # each start renewed the access token from the rotated refresh token
