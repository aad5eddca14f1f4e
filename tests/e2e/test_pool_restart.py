"""Pool health and the generated admin key survive a restart of `chatbridge serve`."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import openai

from tests.harness import GatewayProcess
from tests.pool.helpers import HI, MODEL, assert_no_full_token
from tests.upstreams import K2ThinkEmulator

CLIENT_KEY = "sk-client-restart-key-0123456789"


def _stats(process: GatewayProcess, key: str) -> dict[str, dict[str, object]]:
    response = httpx.get(process.base_url + "/admin/tokens/stats", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return {t["token"]: t for t in response.json()["data"]["tokens"]}


def _chat(process: GatewayProcess, n: int) -> None:
    client = openai.OpenAI(base_url=process.base_url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    for _ in range(n):
        assert client.chat.completions.create(model=MODEL, messages=HI).choices[0].message.content  # type: ignore[arg-type]


def test_restart_keeps_pool_health_and_the_admin_key(k2emu: K2ThinkEmulator, tmp_path: Path) -> None:
    good, revoked, limited = k2emu.mint_token(), k2emu.mint_token(state="revoked"), k2emu.mint_token(state="rate_limited")
    k2emu.retry_after = 600
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text(f"{good}\n{revoked}\n{limited}\n")
    env = {"DATA_DIR": str(tmp_path / "data"), "K2THINK_BASE_URL": k2emu.base_url, "TOKENS_FILE": str(tokens_file),
           "VALID_API_KEY": CLIENT_KEY}
    masked = {name: t[:6] + "…" + t[-4:] for name, t in (("good", good), ("revoked", revoked), ("limited", limited))}

    first = GatewayProcess(env, tmp_path).start()
    try:
        found = re.search(r"admin key \(for /admin/\): generated.*\n\s+(sk-admin-\S+)", first.output)
        assert found, first.output
        admin_key = found.group(1)
        _chat(first, 6)
        before = _stats(first, admin_key)
    finally:
        first.stop()
    assert before[masked["revoked"]]["state"] == "disabled" and before[masked["limited"]]["state"] == "cooling"
    assert (tmp_path / "data" / "pool-state.json").exists()
    revoked_uses = k2emu.used_tokens.count(revoked)

    second = GatewayProcess(env, tmp_path).start()
    try:
        after = _stats(second, admin_key)  # the same, stored admin key still opens /admin/
        _chat(second, 3)
        assert httpx.get(second.base_url + "/admin/pools", headers={"Authorization": f"Bearer {CLIENT_KEY}"}).status_code == 401
    finally:
        second.stop()
    assert after[masked["revoked"]]["state"] == "disabled" and "401" in str(after[masked["revoked"]]["last_error"])
    assert after[masked["limited"]]["state"] == "cooling"
    assert after[masked["limited"]]["cooldown_until"] == before[masked["limited"]]["cooldown_until"]
    assert float(after[masked["limited"]]["cooldown_until"]) > time.time() + 500  # type: ignore[arg-type]
    assert after[masked["good"]]["requests_served"] == before[masked["good"]]["requests_served"] == 6
    assert k2emu.used_tokens.count(revoked) == revoked_uses  # never tried again after the restart
    assert admin_key not in second.output and admin_key[:6] + "…" + admin_key[-4:] in second.output  # printed once
    assert_no_full_token(first.output + second.output, [good, revoked, limited])
