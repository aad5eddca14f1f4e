"""Bad input to the admin API: odd indexes, unknown names, wrong methods, junk bodies. Never a 500.

And no way around the key: path tricks with a client key reach nothing under /admin/.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.harness import API_KEY, GatewayServer
from tests.pool.helpers import admin, assert_no_full_token, stats, write_accounts
from tests.upstreams import K2ThinkEmulator

BAD_INDEXES = ["3", "-1", "abc", "1.5", "%201", "1_0", "%D9%A1", "0x1", "99999999999999999999999", "1e3", "%00", "++1"]
BODIES: list[tuple[bytes, str]] = [
    (b"", "application/json"),
    (b"{not json", "application/json"),
    (b'{"index": 0, "tokens": ["x"]}', "application/json"),
    (b"\xff\xfe\x00garbage", "application/octet-stream"),
    (b"[" * 5000, "application/json"),
    (b"a=1&b=2", "application/x-www-form-urlencoded"),
]


@pytest.fixture
def gw(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path) -> GatewayServer:
    tokens = [k2emu.mint_token() for _ in range(3)]
    (tmp_path / "tokens.txt").write_text("\n".join(tokens) + "\n")
    write_accounts(tmp_path / "accounts.txt", [("someone@example.com", "pw-someone-secret")])
    server = start_gateway(k2think_base_url=k2emu.base_url, tokens_file=tmp_path / "tokens.txt",
                           accounts_file=tmp_path / "accounts.txt", enable_token_auto_update=True,
                           token_refresh_min_interval=3600, signin_attempts=1)
    server.tokens = tokens  # type: ignore[attr-defined]
    return server


def _check(response: httpx.Response, allowed: set[int]) -> None:
    assert response.status_code in allowed, (response.request.method, response.request.url, response.status_code, response.text)
    body = response.json()
    assert body["status"] in ("success", "error", "disabled")
    if body["status"] == "error":
        assert set(body) == {"status", "message"} and body["message"]


def test_bad_indexes_are_400_and_change_nothing(gw: GatewayServer) -> None:
    ids = [e.credential.id for e in gw.runtime.pools["k2think"].entries]
    with admin(gw) as http:
        for cid in ids[:2]:  # " 1" or "١" read as 1 would re-enable one of these
            assert http.post(f"/admin/pools/k2think/{cid}/disable").status_code == 200
    before = stats(gw)
    with admin(gw) as http:
        for bad in BAD_INDEXES:
            response = http.post(f"/admin/tokens/reset/{bad}")
            _check(response, {400, 404})
        assert http.post("/admin/tokens/reset/").status_code in (404, 405)
    assert stats(gw)["tokens"] == before["tokens"] and stats(gw)["disabled_tokens"] == 2
    with admin(gw) as http:
        assert http.post("/admin/tokens/reset/1").json()["data"]["state"] == "active"


def test_unknown_names_actions_and_methods(gw: GatewayServer) -> None:
    cid = gw.runtime.pools["k2think"].entries[0].credential.id
    with admin(gw) as http:
        for path in (f"/admin/pools/kimi/{cid}/reset", "/admin/pools/k2think/nope/reset", f"/admin/pools/k2think/{cid}/delete",
                     f"/admin/pools/k2think/{cid.upper()}/reset", "/admin/pools/k2think/%2e%2e/reset", "/admin/pools//x/reset",
                     f"/admin/pools/k2think/{cid}/reset/extra", "/admin/tokens", "/admin/", "/admin/pools/openai/x/enable"):
            _check(http.post(path), {404, 405})
        for method in ("PUT", "DELETE", "PATCH"):
            for path in ("/admin/tokens/stats", "/admin/tokens/reset-all", f"/admin/pools/k2think/{cid}/reset"):
                _check(http.request(method, path), {405})
        _check(http.get(f"/admin/pools/k2think/{cid}/reset"), {405})


def test_junk_bodies_and_queries_are_ignored_or_refused_cleanly(gw: GatewayServer) -> None:
    cid = gw.runtime.pools["k2think"].entries[0].credential.id
    posts = ["/admin/tokens/reset-consecutive", "/admin/tokens/reset/0", "/admin/tokens/reset-all", "/admin/tokens/reload",
             f"/admin/pools/k2think/{cid}/disable", f"/admin/pools/k2think/{cid}/enable", f"/admin/pools/k2think/{cid}/reset"]
    with admin(gw) as http:
        for path in posts:
            for body, content_type in BODIES:
                _check(http.post(path, content=body, headers={"content-type": content_type}), {200})
        for query in ("?wait=false", "?wait=maybe&wait=0", "?%ff=%00"):
            _check(http.post("/admin/tokens/updater/force-update" + query), {200, 202, 500})
        for path in ("/admin/tokens/stats?verbose=%ff", "/admin/pools?provider=" + "x" * 5000):
            _check(http.get(path), {200})
        oversized = http.post("/admin/tokens/reset-all", content=b"x" * (2 * 1024 * 1024))
        _check(oversized, {200, 413})
    assert stats(gw)["active_tokens"] == 3
    assert_no_full_token(gw.logs.text, gw.tokens)  # type: ignore[attr-defined]


def test_a_client_key_and_path_tricks_never_reach_admin(gw: GatewayServer) -> None:
    tricks = ["/v1/../admin/tokens/stats", "/v1/%2e%2e/admin/tokens/stats", "//admin/tokens/stats", "/admin/./tokens/stats",
              "/ADMIN/tokens/stats", "/admin/tokens/stats/", "/admin%2ftokens/stats", "/v1//admin/tokens/stats",
              "/chat/completions/../../admin/tokens/stats"]
    ids = [e.credential.id for e in gw.runtime.pools["k2think"].entries]
    with httpx.Client(base_url=gw.base_url) as http:
        for path in tricks:
            for headers in ({}, {"Authorization": f"Bearer {API_KEY}"}, {"x-api-key": API_KEY}):
                request = http.build_request("GET", gw.base_url, headers=headers)
                request.url = request.url.copy_with(raw_path=path.encode())
                response = http.send(request)
                assert response.status_code in (401, 404, 405, 307), (path, headers, response.status_code)
                assert response.status_code < 500
                assert not any(i in response.text for i in ids) and "total_tokens" not in response.text, (path, headers)
