"""Refresh from an accounts file against the emulator: start, force-update, failures, auth trigger."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.harness import GatewayServer
from tests.pool.helpers import (
    admin,
    assert_no_full_token,
    auto_update_settings,
    chat,
    stats,
    updater_status,
    wait_for,
    write_accounts,
)
from tests.upstreams import K2ThinkEmulator

GOOD = [(f"user{i}@example.com", f"pw-good-{i}-secret") for i in range(4)]


def test_accounts_file_produces_a_fresh_tokens_file_and_force_update_works(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    for email, password in GOOD:
        k2emu.add_account(email, password)
        k2emu.fail_signin(email, status=500, times=1)  # every account needs a retry: the first refresh takes a moment
    k2emu.fail_signin("flaky@example.com", status=502, times=None)
    accounts = [*GOOD, ("wrong@example.com", "pw-wrong-secret"), ("flaky@example.com", "pw-flaky-secret")]
    write_accounts(tmp_path / "accounts.txt", accounts[:3])
    with (tmp_path / "accounts.txt").open("a") as handle:  # the original tool's field name works too
        handle.write("".join(f'{{"email": "{e}", "k2_password": "{p}"}}\n' for e, p in accounts[3:]))
    k2emu.add_account("wrong@example.com", "another-password")
    gw = start_gateway(**auto_update_settings(k2emu.base_url, tmp_path, signin_retry_backoff=0.3))

    with pytest.raises(openai.APIStatusError) as caught:  # no token yet: a clear 503, not a dead end
        chat(gw)
    assert caught.value.status_code == 503 and "token refresh from ACCOUNTS_FILE is running" in caught.value.message
    assert caught.value.response.headers["retry-after"] == "10"

    wait_for(lambda: stats(gw)["total_tokens"] == 4, timeout=15)
    tokens_file = tmp_path / "tokens.txt"
    first = tokens_file.read_text()
    assert sorted(line for line in first.splitlines() if not line.startswith("#")) == sorted(
        k2emu.issued_tokens[e][-1] for e, _ in GOOD)
    assert not (tmp_path / "tokens.txt.backup").exists()
    assert chat(gw)
    status = updater_status(gw)
    assert status["update_count"] == 1 and status["is_running"] and not status["is_updating"]
    result = status["last_result"]
    assert isinstance(result, dict) and result["signed_in"] == 4 and result["failed"] == 2
    assert any("wr***@example.com: sign-in refused (HTTP 400)" in e for e in result["errors"])
    assert k2emu.signin_attempts["wrong@example.com"] == 1 and k2emu.signin_attempts["flaky@example.com"] == 3

    with admin(gw) as http:
        forced = http.post("/admin/tokens/updater/force-update")
    assert forced.status_code == 200, forced.text
    body = forced.json()
    assert body["status"] == "success" and body["data"]["result"]["signed_in"] == 4
    assert (tmp_path / "tokens.txt.backup").read_text() == first
    second = [line for line in tokens_file.read_text().splitlines() if not line.startswith("#")]
    assert sorted(second) == sorted(k2emu.issued_tokens[e][-1] for e, _ in GOOD) and set(second).isdisjoint(first.splitlines())
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert chat(gw) and k2emu.used_tokens[-1] in second
    accounts_view = {t["account"] for t in stats(gw)["tokens"]}
    assert accounts_view == {"us***@example.com"}
    secrets = [t for issued in k2emu.issued_tokens.values() for t in issued] + [p for _, p in accounts]
    assert_no_full_token(gw.logs.text + forced.text + str(status), secrets)


def test_a_failed_refresh_leaves_file_and_pool_untouched(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    manual = [k2emu.mint_token(), k2emu.mint_token()]
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text("# by hand\n" + "\n".join(manual) + "\n")
    before = tokens_file.read_bytes()
    write_accounts(tmp_path / "accounts.txt", GOOD)
    for email, password in GOOD:
        k2emu.add_account(email, password)
        k2emu.fail_signin(email, status=503)  # the upstream's sign-in is down for good
    leftover = tmp_path / ".tokens.txt.crashed.tmp"
    leftover.write_text("half a file")
    gw = start_gateway(**auto_update_settings(k2emu.base_url, tmp_path))
    assert not leftover.exists()  # cleaned at start

    with admin(gw) as http:
        forced = http.post("/admin/tokens/updater/force-update")
    assert forced.status_code == 500
    assert forced.json() == {"status": "error", "message": "Token update failed: no account signed in (4 failed); the previous tokens stay in use"}
    assert tokens_file.read_bytes() == before and not (tmp_path / "tokens.txt.backup").exists()
    assert stats(gw)["total_tokens"] == 2 and chat(gw)
    status = updater_status(gw)
    assert status["error_count"] == 1 and status["update_count"] == 0
    assert "no account signed in" in str(status["last_error"])

    # Half of the accounts come back: a partial refresh replaces the file, keeping the old usable tokens.
    for email, _ in GOOD[:2]:
        k2emu.clear_signin_failures(email)
    with admin(gw) as http:
        partial = http.post("/admin/tokens/updater/force-update").json()
    assert partial["data"]["result"]["signed_in"] == 2 and partial["data"]["result"]["kept"] == 2
    assert stats(gw)["total_tokens"] == 4
    assert (tmp_path / "tokens.txt.backup").read_bytes() == before


def test_auth_failure_triggers_a_background_refresh(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    tokens = [k2emu.mint_token() for _ in range(3)]
    k2emu.revoke(tokens[0])
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text("\n".join(tokens) + "\n")
    write_accounts(tmp_path / "accounts.txt", GOOD[:2])
    for email, password in GOOD[:2]:
        k2emu.add_account(email, password)
    gw = start_gateway(**auto_update_settings(k2emu.base_url, tmp_path))
    assert updater_status(gw)["update_count"] == 0  # a non-empty tokens file: no refresh at start

    assert chat(gw)  # the revoked token is tried first, refused, and the request retried
    wait_for(lambda: updater_status(gw)["update_count"] == 1)
    result = updater_status(gw)["last_result"]
    assert isinstance(result, dict) and "was refused (auth)" in result["reason"]
    lines = [line for line in tokens_file.read_text().splitlines() if not line.startswith("#")]
    assert tokens[0] not in lines and tokens[1] in lines and tokens[2] in lines and len(lines) == 4
    assert stats(gw)["total_tokens"] == 4 and stats(gw)["disabled_tokens"] == 0
    with httpx.Client() as http:
        health = http.get(gw.base_url + "/health").json()["providers"]["k2think"]
    assert health["auto_update"] and health["credentials"]["active"] == 4
