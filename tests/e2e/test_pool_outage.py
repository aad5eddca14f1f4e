"""An upstream-wide outage rests the upstream, never disables the credentials: after it, and after a
restart, every token serves again (issue 10, point 7)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tests.harness import GatewayServer
from tests.pool.helpers import HI, MODEL, stats
from tests.upstreams import K2ThinkEmulator


def _chat(gw: GatewayServer) -> str:
    reply = gw.openai().chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    return reply.choices[0].message.content or ""


def _wait_until_rested(gw: GatewayServer) -> None:
    """Until the upstream's rest is over (the pool says when), bounded."""
    pool = gw.runtime.pools["k2think"]
    deadline = time.monotonic() + 10
    while pool.outage.is_open(pool.now()):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_an_outage_of_every_token_leaves_them_all_serving_after_recovery_and_restart(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path,
) -> None:
    tokens = [k2emu.mint_token() for _ in range(3)]
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text("".join(t + "\n" for t in tokens))
    # Rests of 1.5 s, then 3 s: the next request lands inside the first one even on a loaded machine.
    settings = {"k2think_base_url": k2emu.base_url, "tokens_file": tokens_file, "token_backoff_seconds": 1.5}
    gw = start_gateway(**settings)

    k2emu.fail_next(1000, 503)  # the upstream is down for everyone
    with pytest.raises(openai.InternalServerError) as caught:  # this request saw it: the upstream's failure
        _chat(gw)
    assert caught.value.status_code == 503 and "HTTP 503" in caught.value.message  # overloaded: 503 + Retry-After
    reached = len(k2emu.chat_requests)
    assert reached == 3  # one request tried each token once
    with pytest.raises(openai.InternalServerError) as caught:  # while it rests, nothing is sent upstream
        _chat(gw)
    assert caught.value.status_code == 503 and caught.value.response.headers.get("retry-after")
    assert "all 3 usable credentials failed" in caught.value.message
    assert len(k2emu.chat_requests) == reached
    assert stats(gw)["upstream_outage"]["state"] in ("open", "trial")

    _wait_until_rested(gw)
    with pytest.raises(openai.InternalServerError):  # the trial request: still down
        _chat(gw)
    assert len(k2emu.chat_requests) == reached + 1

    k2emu.clear_failures()  # the upstream recovers
    _wait_until_rested(gw)
    assert all(_chat(gw) for _ in range(6))
    served = stats(gw)
    assert [t["state"] for t in served["tokens"]] == ["active"] * 3
    assert all(t["requests_served"] == 2 for t in served["tokens"])  # round robin over all three again
    assert served["failure_distribution"] == {"0": 3}
    gw.stop()

    again = start_gateway(**settings)  # health was saved: nothing disabled after a restart either
    restored = stats(again)
    assert [t["state"] for t in restored["tokens"]] == ["active"] * 3
    assert all(t["requests_served"] == 2 for t in restored["tokens"])
    before = len(k2emu.chat_requests)
    assert all(_chat(again) for _ in range(3))
    assert set(k2emu.used_tokens[before:]) == set(tokens)
