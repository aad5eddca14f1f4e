"""Two gateways sharing Redis (DB 11) in front of one K2Think emulator, driven over HTTP.

Each gateway is configured with `REDIS_URL` (its own DATA_DIR and tokens file, as a container
has), so the same pools, lifecycles and admin routes run as they do behind nginx. Clients: the
real `openai` SDK and httpx.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatbridge.pool.sources import credential_id
from tests.harness import GatewayServer, make_settings
from tests.pool.helpers import HI, MODEL
from tests.pool.replicas import REDIS_URL, redis_store
from tests.upstreams.k2think import K2ThinkEmulator

pytestmark = pytest.mark.timeout(90)


def _admin(gw: GatewayServer) -> httpx.Client:
    return httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {gw.runtime.admin_keys[0]}"}, timeout=10)


def _credential(gw: GatewayServer, cid: str) -> dict[str, Any]:
    with _admin(gw) as http:
        body = http.get("/admin/pools").json()
    (found,) = [c for c in body["data"]["providers"]["k2think"]["credentials"] if c["id"] == cid]
    return found  # type: ignore[no-any-return]


def test_a_credential_disabled_through_one_gateway_is_skipped_by_the_other(
    k2emu: K2ThinkEmulator, tmp_path: Path,
) -> None:
    probe = asyncio.run(redis_store())  # flushes DB 11
    if probe is None:
        pytest.skip("no Redis backend or no Redis server on DB 11")
    asyncio.run(probe.aclose())
    first, second = k2emu.mint_token(), k2emu.mint_token()
    gateways: list[GatewayServer] = []
    try:
        for name in ("one", "two"):
            folder = tmp_path / name
            folder.mkdir()
            (folder / "tokens.txt").write_text(f"{first}\n{second}\n")
            settings = make_settings(folder, k2think_base_url=k2emu.base_url, tokens_file=folder / "tokens.txt",
                                     admin_api_key=f"sk-admin-{name}-0123456789", redis_url=REDIS_URL)
            gateways.append(GatewayServer(settings).start())
        one, two = gateways
        cid = credential_id("k2think", first)
        with _admin(one) as http:
            assert http.post(f"/admin/pools/k2think/{cid}/disable").status_code == 200
        deadline = time.monotonic() + 2
        while _credential(two, cid)["state"] != "disabled":
            assert time.monotonic() < deadline, "the other gateway did not see the disable within 2 s"
            time.sleep(0.05)
        before = len(k2emu.used_tokens)
        client = two.openai()
        for _ in range(4):
            reply = client.chat.completions.create(model=MODEL, messages=HI)
            assert reply.choices[0].message.content
        assert set(k2emu.used_tokens[before:]) == {second}
        # Enabled again through the second gateway: the first one serves with it again.
        with _admin(two) as http:
            assert http.post(f"/admin/pools/k2think/{cid}/enable").status_code == 200
        deadline = time.monotonic() + 2
        while _credential(one, cid)["state"] == "disabled":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        before = len(k2emu.used_tokens)
        for _ in range(4):
            one.openai().chat.completions.create(model=MODEL, messages=HI)
        assert set(k2emu.used_tokens[before:]) == {first, second}  # round robin over both again
    finally:
        for gw in gateways:
            gw.stop()
