"""A mixed pool under concurrent load, hot reload of the tokens file, and the exhausted pool's 503."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.harness import GatewayServer
from tests.pool.helpers import HI, MODEL, assert_no_full_token, chat, concurrent_chats, stats, wait_for
from tests.upstreams import K2ThinkEmulator


def test_good_expired_revoked_and_rate_limited_under_load(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    good = [k2emu.mint_token() for _ in range(2)]
    expired = k2emu.mint_token(exp_in=-60)
    revoked = k2emu.mint_token(state="revoked")
    limited = k2emu.mint_token(state="rate_limited")
    flaky = k2emu.mint_token(state="error500")
    k2emu.retry_after = 120
    everything = [*good, expired, revoked, limited, flaky]
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text("\n".join(everything) + "\n")
    gw = start_gateway(k2think_base_url=k2emu.base_url, tokens_file=tokens_file, max_retries=4)

    results = concurrent_chats(gw, 120)

    assert not [r for r in results if isinstance(r, BaseException)]
    assert expired not in k2emu.used_tokens
    data = {t["token"]: t for t in stats(gw)["tokens"]}

    def of(token: str) -> dict[str, object]:
        return data[token[:6] + "…" + token[-4:]]

    assert of(expired)["state"] == "expired"
    assert of(revoked)["state"] == "disabled" and "401" in str(of(revoked)["last_error"])
    limited_view = of(limited)
    assert limited_view["state"] == "cooling" and limited_view["failures"] == 0
    assert float(limited_view["cooldown_until"]) > time.time() + 100  # type: ignore[arg-type]
    flaky_view = of(flaky)  # resting (or back on trial), never disabled for 5xx
    assert flaky_view["state"] in ("cooling", "active") and flaky_view["disabled_reason"] is None
    assert int(flaky_view["failures"]) >= 3  # type: ignore[call-overload]
    assert all(of(t)["state"] == "active" and of(t)["failures"] == 0 for t in good)
    assert sum(int(of(t)["requests_served"]) for t in good) == 120  # type: ignore[call-overload]
    with httpx.Client() as http:
        health = http.get(gw.base_url + "/health").json()
    counts = health["providers"]["k2think"]["credentials"]
    assert {k: counts[k] for k in ("total", "disabled", "expired")} == {"total": 6, "disabled": 1, "expired": 1}
    assert counts["active"] + counts["cooling"] == 4
    assert_no_full_token(gw.logs.text, everything)


def test_exhausted_pool_is_503_with_retry_after_and_hand_edits_are_picked_up(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    limited = k2emu.mint_token(state="rate_limited")
    k2emu.retry_after = 40
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text(limited + "\n")
    gw = start_gateway(k2think_base_url=k2emu.base_url, tokens_file=tokens_file, tokens_reload_interval=0.1)
    with pytest.raises(openai.RateLimitError):
        chat(gw)  # the only token answers 429: the client learns it is rate limited
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gw)
    assert caught.value.status_code == 503
    assert "1 cooling down" in caught.value.message and "tokens.txt" in caught.value.message
    retry_after = int(caught.value.response.headers["retry-after"])
    assert 30 <= retry_after <= 40

    fresh = k2emu.mint_token()
    tokens_file.write_text(f"{limited}\n# added by hand\n{fresh}\n")
    wait_for(lambda: stats(gw)["total_tokens"] == 2)
    assert chat(gw)
    assert k2emu.used_tokens[-1] == fresh
    assert stats(gw)["tokens"][0]["state"] == "cooling"  # health of the kept token survived the reload
    gw_reply = gw.openai().chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    assert gw_reply.choices[0].message.content
