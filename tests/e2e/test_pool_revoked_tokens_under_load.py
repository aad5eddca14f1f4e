"""Revoked tokens under load: 5 tokens, 2 revoked, 200 concurrent requests, all succeed, no token in the logs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.harness import GatewayServer
from tests.pool.helpers import assert_no_full_token, concurrent_chats, stats
from tests.upstreams import K2ThinkEmulator


def test_two_revoked_of_five_under_200_concurrent_requests(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    tokens = [k2emu.mint_token() for _ in range(5)]
    revoked = {tokens[1], tokens[3]}
    for token in revoked:
        k2emu.revoke(token)
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text("\n".join(tokens) + "\n")
    gw = start_gateway(k2think_base_url=k2emu.base_url, tokens_file=tokens_file)

    results = concurrent_chats(gw, 200)

    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]
    assert all(r.choices[0].message.content for r in results)
    data = stats(gw)
    assert data["total_tokens"] == 5 and data["active_tokens"] == 3 and data["disabled_tokens"] == 2
    by_state = {t["token"]: t["state"] for t in data["tokens"]}
    for token in tokens:
        masked = token[:6] + "…" + token[-4:]
        assert by_state[masked] == ("disabled" if token in revoked else "active")
    served = sum(t["requests_served"] for t in data["tokens"])
    assert served == 200
    used = [t for t in k2emu.used_tokens if t in revoked]
    assert 2 <= len(used) <= 200  # revoked ones were tried, then never again once disabled
    assert_no_full_token(gw.logs.text, tokens)
    assert "disabled" in stats(gw)["tokens"][1]["state"]
