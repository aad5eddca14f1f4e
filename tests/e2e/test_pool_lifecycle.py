"""Pool lifecycle against the K2Think emulator with the official SDK: exhaustion, triggers, refresh in the background."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.harness import GatewayServer, free_port
from tests.pool.helpers import (
    admin,
    assert_no_full_token,
    auto_update_settings,
    chat,
    concurrent_chats,
    stats,
    updater_status,
    wait_for,
    write_accounts,
)
from tests.upstreams import K2ThinkEmulator

ACCOUNT = ("owner@example.com", "pw-owner-secret")


def _by_token(gw: GatewayServer) -> dict[str, dict[str, Any]]:
    return {t["token"]: t for t in stats(gw)["tokens"]}


def _masked(token: str) -> str:
    return token[:6] + "…" + token[-4:]


def test_when_every_token_is_refused_the_client_gets_503_and_a_refresh_brings_the_pool_back(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    revoked = [k2emu.mint_token(state="revoked") for _ in range(2)]
    (tmp_path / "tokens.txt").write_text("\n".join(revoked) + "\n")
    write_accounts(tmp_path / "accounts.txt", [ACCOUNT])
    k2emu.add_account(*ACCOUNT)
    k2emu.fail_signin(ACCOUNT[0], status=502, times=1)  # the refresh needs a retry: it is still running below
    gw = start_gateway(**auto_update_settings(k2emu.base_url, tmp_path, signin_retry_backoff=1.0))

    with pytest.raises(openai.APIStatusError) as caught:
        chat(gw)
    error = caught.value
    assert error.status_code == 503, error.message
    assert "no usable credential (2 disabled" in error.message and "token refresh from ACCOUNTS_FILE is running" in error.message
    assert "last error: k2think upstream returned HTTP 401" in error.message
    assert error.response.headers["retry-after"] == "10"
    assert updater_status(gw)["is_updating"]  # triggered, and running in the background

    wait_for(lambda: updater_status(gw)["update_count"] == 1, timeout=15)
    assert chat(gw)
    lines = [line for line in (tmp_path / "tokens.txt").read_text().splitlines() if not line.startswith("#")]
    assert lines == [k2emu.issued_tokens[ACCOUNT[0]][-1]]  # the refused tokens are dropped from the file
    assert_no_full_token(gw.logs.text + error.message, [*revoked, *k2emu.issued_tokens[ACCOUNT[0]], ACCOUNT[1]])


def test_without_auto_update_an_exhausted_pool_says_how_to_fix_it(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    revoked = k2emu.mint_token(state="revoked")
    (tmp_path / "tokens.txt").write_text(revoked + "\n")
    gw = start_gateway(k2think_base_url=k2emu.base_url, tokens_file=tmp_path / "tokens.txt")
    for _ in range(2):  # the request that used the last token up, and the next one
        with pytest.raises(openai.APIStatusError) as caught:
            chat(gw)
        assert caught.value.status_code == 503
        assert "1 disabled" in caught.value.message and "add working tokens to tokens.txt" in caught.value.message
        assert int(caught.value.response.headers["retry-after"]) >= 1
    assert k2emu.used_tokens.count(revoked) == 1  # disabled at once, never tried again


def test_requests_are_served_from_the_old_pool_while_a_refresh_runs_and_refreshes_never_overlap(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    old = [k2emu.mint_token() for _ in range(2)]
    (tmp_path / "tokens.txt").write_text("\n".join(old) + "\n")
    accounts = [(f"member{i}@example.com", f"pw-member-{i}") for i in range(3)]
    write_accounts(tmp_path / "accounts.txt", accounts)
    for email, password in accounts:
        k2emu.add_account(email, password)
        k2emu.fail_signin(email, status=503, times=1)  # every sign-in needs a retry, 1.5 s later
    gw = start_gateway(**auto_update_settings(k2emu.base_url, tmp_path, signin_retry_backoff=1.5))

    responses: list[httpx.Response] = []

    def force() -> None:
        with admin(gw) as http:
            responses.append(http.post("/admin/tokens/updater/force-update"))

    callers = [threading.Thread(target=force) for _ in range(3)]
    for caller in callers:
        caller.start()
    wait_for(lambda: updater_status(gw)["is_updating"])
    during = concurrent_chats(gw, 20)  # served meanwhile, from the old tokens
    assert updater_status(gw)["is_updating"]
    for caller in callers:
        caller.join(timeout=30)

    assert not [r for r in during if isinstance(r, BaseException)]
    assert set(k2emu.used_tokens[:20]) == set(old)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert sorted(r.json()["data"]["joined_running_update"] for r in responses) == [False, True, True]
    assert {r.json()["data"]["result"]["finished_at"] for r in responses} == {responses[0].json()["data"]["result"]["finished_at"]}
    assert all(k2emu.signin_attempts[email] == 2 for email, _ in accounts)  # one refresh: one failure + one success each
    assert updater_status(gw)["update_count"] == 1 and stats(gw)["total_tokens"] == 5


def test_two_credentials_failing_in_a_row_trigger_a_refresh(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    flaky = [k2emu.mint_token(state="error500") for _ in range(2)]
    good = k2emu.mint_token()
    (tmp_path / "tokens.txt").write_text("\n".join([*flaky, good]) + "\n")
    write_accounts(tmp_path / "accounts.txt", [ACCOUNT])
    k2emu.add_account(*ACCOUNT)
    gw = start_gateway(**auto_update_settings(k2emu.base_url, tmp_path))

    assert chat(gw)  # 500, 500, then the good token answers
    wait_for(lambda: updater_status(gw)["update_count"] == 1)
    assert "2 consecutive failed attempts" in updater_status(gw)["last_result"]["reason"]
    view = _by_token(gw)
    assert [view[_masked(t)]["failures"] for t in flaky] == [1, 1]  # one failure each, not disabled yet
    assert stats(gw)["total_tokens"] == 4


def test_resets_count_as_failures_but_an_outage_or_an_unreachable_upstream_blames_no_token(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    tokens = [k2emu.mint_token() for _ in range(3)]
    (tmp_path / "tokens.txt").write_text("\n".join(tokens) + "\n")
    k2emu.break_mid_stream, k2emu.interrupt_after_events = True, 0  # headers, then the connection is cut
    gw = start_gateway(k2think_base_url=k2emu.base_url, tokens_file=tmp_path / "tokens.txt", max_retries=1)
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gw)
    assert caught.value.status_code == 502
    view = _by_token(gw)
    assert [view[_masked(t)]["failures"] for t in tokens] == [1, 1, 0]
    assert all("broke off" in str(view[_masked(t)]["last_error"]) for t in tokens[:2])
    with pytest.raises(openai.APIStatusError) as caught:  # the third fails too: the upstream is down
        chat(gw)
    assert caught.value.status_code == 502 and "broke off" in caught.value.message
    assert "all 3 usable credentials failed" in stats(gw)["upstream_outage"]["reason"]
    view = _by_token(gw)
    assert [view[_masked(t)]["failures"] for t in tokens] == [0, 0, 0]  # nobody's verdict
    assert all("broke off" in str(view[_masked(t)]["last_error"]) for t in tokens)

    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    down = start_gateway(k2think_base_url=nowhere, tokens_file=tmp_path / "tokens.txt", max_retries=2, data_dir=tmp_path / "d2")
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as unreachable:
            chat(down)
        assert unreachable.value.status_code == 502 and "unreachable" in unreachable.value.message
    view = _by_token(down)
    assert [view[_masked(t)]["failures"] for t in tokens] == [0, 0, 0]
    assert stats(down)["active_tokens"] == 3  # an outage never disables the pool


def test_tokens_close_to_expiry_are_refreshed_ahead_for_known_accounts(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    write_accounts(tmp_path / "accounts.txt", [ACCOUNT])
    k2emu.add_account(*ACCOUNT)
    k2emu.token_lifetime = 300  # inside TOKEN_REFRESH_AHEAD (600 s)
    first = start_gateway(**auto_update_settings(k2emu.base_url, tmp_path))  # an empty tokens file: signed in at start
    wait_for(lambda: stats(first)["total_tokens"] == 1)
    first.stop()
    short_lived = k2emu.issued_tokens[ACCOUNT[0]][-1]
    manual = k2emu.mint_token(exp_in=300)  # close to expiry too, but no account is known for it
    with (tmp_path / "tokens.txt").open("a") as handle:
        handle.write(manual + "\n")

    k2emu.token_lifetime = 7200
    second = start_gateway(**auto_update_settings(k2emu.base_url, tmp_path))  # the same DATA_DIR: it knows whose token it is
    wait_for(lambda: updater_status(second)["update_count"] == 2)
    assert "expire within 600 s" in updater_status(second)["last_result"]["reason"]
    renewed = k2emu.issued_tokens[ACCOUNT[0]][-1]
    lines = [line for line in (tmp_path / "tokens.txt").read_text().splitlines() if not line.startswith("#")]
    assert lines == [renewed, manual] and short_lived not in lines
    assert k2emu.signin_attempts[ACCOUNT[0]] == 2
    view = _by_token(second)
    assert view[_masked(renewed)]["account"] == "ow***@example.com" and view[_masked(manual)]["account"] is None


def test_accounts_alone_fill_a_tokens_file_under_data_dir(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    write_accounts(tmp_path / "accounts.txt", [ACCOUNT])
    k2emu.add_account(*ACCOUNT)
    settings = auto_update_settings(k2emu.base_url, tmp_path)
    del settings["tokens_file"]
    gw = start_gateway(**settings)
    wait_for(lambda: stats(gw)["total_tokens"] == 1)
    written = tmp_path / "data" / "k2think-tokens.txt"
    assert written.stat().st_mode & 0o777 == 0o600
    assert k2emu.issued_tokens[ACCOUNT[0]][-1] in written.read_text()
    assert chat(gw)
    with admin(gw) as http:
        reload = http.post("/admin/tokens/reload").json()
        assert reload["status"] == "success" and reload["data"]["total_tokens"] == 1
        pools = http.get("/admin/pools").json()["data"]["providers"]["k2think"]
    assert pools["tokens_file"] == str(written) and pools["refresh"]["update_count"] == 1
