"""Every admin route: refused without the admin key (a client key is not one), and what each returns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from chatbridge.api.admin_page import ASSET_PREFIX, PAGE_PATHS
from chatbridge.runtime import ConfigurationError, build_runtime
from tests.harness import API_KEY, GatewayServer, make_settings
from tests.pool.helpers import admin, assert_no_full_token, chat, stats
from tests.upstreams import K2ThinkEmulator

ORIGINAL_STATS_KEYS = {
    "total_tokens", "active_tokens", "inactive_tokens", "current_index", "failure_distribution", "max_failures",
    "consecutive_failures", "consecutive_failure_threshold", "consecutive_upstream_errors", "upstream_error_threshold",
}


PAGE_ROUTES = (*PAGE_PATHS, ASSET_PREFIX + "{name}")  # the web page: static, no data, open (tests/e2e/test_admin_page.py)


def _admin_routes(gw: GatewayServer) -> list[tuple[str, str]]:
    routes = []
    for route in gw.app.framework.routes:
        if isinstance(route, Route) and route.path.startswith("/admin") and route.path not in PAGE_ROUTES:
            path = route.path.format(index="0", provider="k2think", credential="abc", action="reset", name="team-a")
            routes.extend((method, path) for method in sorted(route.methods or ()) if method != "HEAD")
    return routes


@pytest.fixture
def gw(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path) -> GatewayServer:
    tokens = [k2emu.mint_token() for _ in range(3)]
    (tmp_path / "tokens.txt").write_text("\n".join(tokens) + "\n")
    server = start_gateway(k2think_base_url=k2emu.base_url, tokens_file=tmp_path / "tokens.txt")
    server.tokens = tokens  # type: ignore[attr-defined]
    return server


def test_every_admin_route_refuses_a_missing_wrong_or_client_key(gw: GatewayServer) -> None:
    routes = _admin_routes(gw)
    assert len(routes) == 19  # the original 10, the per-provider credentials routes, client keys and usage
    ids = [e.credential.id for e in gw.runtime.pools["k2think"].entries]
    attempts = [{}, {"Authorization": f"Bearer {API_KEY}"}, {"x-api-key": API_KEY}, {"Authorization": "Bearer sk-admin-guess"}]
    with httpx.Client(base_url=gw.base_url) as http:
        for method, path in routes:
            for headers in attempts:
                response = http.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                body = response.json()
                assert body["status"] == "error" and set(body) == {"status", "message"}
                assert not any(i in response.text for i in ids) and "token" not in body["message"].lower()
            ok = http.request(method, path, headers={"x-api-key": gw.runtime.admin_keys[0]})
            assert ok.status_code != 401
        # The admin key is not a client key either.
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {gw.runtime.admin_keys[0]}"}).status_code == 401


def test_token_routes_keep_the_original_shapes(gw: GatewayServer) -> None:
    assert chat(gw)
    data = stats(gw)
    assert ORIGINAL_STATS_KEYS <= set(data)
    assert data["total_tokens"] == 3 and data["failure_distribution"] == {"0": 3} and data["max_failures"] == 3
    assert [t["index"] for t in data["tokens"]] == [0, 1, 2]
    with admin(gw) as http:
        consecutive = http.get("/admin/tokens/consecutive-failures").json()
        assert consecutive["status"] == "success"
        assert {"consecutive_failures", "threshold", "consecutive_upstream_errors", "upstream_error_threshold",
                "last_upstream_error_time", "token_pool_size", "auto_refresh_enabled", "last_check"} <= set(consecutive["data"])
        reset_c = http.post("/admin/tokens/reset-consecutive").json()
        assert reset_c["status"] == "success" and reset_c["data"] == {"previous_count": 0, "current_count": 0}
        one = http.post("/admin/tokens/reset/1").json()
        assert one["status"] == "success" and one["message"] == "Token 1 reset" and one["data"]["index"] == 1
        for bad in ("3", "-1", "abc"):
            invalid = http.post(f"/admin/tokens/reset/{bad}")
            assert invalid.status_code == 400 and invalid.json()["message"].startswith(f"Invalid token index: {bad}")
        everything = http.post("/admin/tokens/reset-all").json()
        assert everything["status"] == "success" and everything["data"]["active_tokens"] == 3
        reload = http.post("/admin/tokens/reload").json()
        assert reload["status"] == "success" and reload["data"]["total_tokens"] == 3
        updater = http.get("/admin/tokens/updater/status").json()
        assert updater["status"] == "disabled" and updater["data"]["is_updating"] is False
        forced = http.post("/admin/tokens/updater/force-update")
        assert forced.status_code == 400 and forced.json()["status"] == "error" and "ENABLE_TOKEN_AUTO_UPDATE" in forced.json()["message"]
        unknown = http.get("/admin/nothing-here")
        assert unknown.status_code == 404 and unknown.json() == {"status": "error", "message": "Unknown admin route: GET /admin/nothing-here"}
        wrong_method = http.get("/admin/tokens/reset-all")
        assert wrong_method.status_code == 405 and wrong_method.json()["status"] == "error"
        texts = consecutive, reset_c, one, everything, reload, updater
    assert_no_full_token(str(texts) + str(data), gw.tokens)  # type: ignore[attr-defined]


def test_pools_view_and_credential_actions(gw: GatewayServer, k2emu: K2ThinkEmulator) -> None:
    with admin(gw) as http:
        view = http.get("/admin/pools").json()
        assert view["status"] == "success"
        k2 = view["data"]["providers"]["k2think"]
        assert k2["mode"] == "token" and k2["counts"]["total"] == 3 and k2["tokens_file"].endswith("tokens.txt")
        first = k2["credentials"][0]
        assert {"id", "token", "state", "failures", "cooldown_until", "expires_at", "last_error", "requests_served"} <= set(first)
        assert len(first["id"]) == 12 and first["token"] == gw.tokens[0][:6] + "…" + gw.tokens[0][-4:]  # type: ignore[attr-defined]
        cid = first["id"]
        disabled = http.post(f"/admin/pools/k2think/{cid}/disable").json()
        assert disabled["status"] == "success" and disabled["data"]["state"] == "disabled"
        for _ in range(4):
            assert chat(gw)
        assert gw.tokens[0] not in k2emu.used_tokens  # type: ignore[attr-defined]
        assert http.post(f"/admin/pools/k2think/{cid}/enable").json()["data"]["state"] == "active"
        assert http.post(f"/admin/pools/k2think/{cid}/reset").json()["message"] == f"Credential {cid} reset"
        assert http.post("/admin/pools/k2think/000000000000/reset").status_code == 404
        assert http.post("/admin/pools/kimi/abc/reset").status_code == 404
        assert http.post(f"/admin/pools/k2think/{cid}/explode").status_code == 404
    assert_no_full_token(str(view), gw.tokens)  # type: ignore[attr-defined]


def test_guest_mode_has_no_pool_to_manage(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(k2think_base_url=k2emu.base_url)
    with admin(gw) as http:
        assert http.get("/admin/tokens/stats").json()["data"]["total_tokens"] == 0
        reset = http.post("/admin/tokens/reset-all")
        assert reset.status_code == 409 and "guest mode" in reset.json()["message"]
        assert http.get("/admin/pools").json()["data"]["providers"]["k2think"] == {"mode": "guest", "pooled": False}


def test_admin_key_equal_to_a_client_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="ADMIN_API_KEY is also a client key"):
        build_runtime(make_settings(tmp_path, admin_api_key=API_KEY))
    runtime = build_runtime(make_settings(tmp_path, admin_api_key="sk-admin-configured-0123456789"))
    assert runtime.admin_keys == ["sk-admin-configured-0123456789"] and runtime.admin_key_source is None


def test_the_start_report_explains_an_accounts_file_that_is_not_used(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.txt"
    accounts.write_text('{"email": "a@example.com", "password": "pw-a-secret"}\n')
    report = build_runtime(make_settings(tmp_path, accounts_file=accounts)).report
    [k2] = [line for line in report if line.startswith("k2think:")]
    assert "guest mode" in k2 and "accounts.txt is not signed in: ENABLE_TOKEN_AUTO_UPDATE=false" in k2
    report = build_runtime(make_settings(tmp_path, enable_token_auto_update=True, k2think_token="tok-" + "x" * 20)).report
    assert any("ENABLE_TOKEN_AUTO_UPDATE=true does nothing without ACCOUNTS_FILE" in line for line in report)


def test_every_pooled_provider_has_its_credentials_routes(gw: GatewayServer) -> None:
    """`/admin/providers/{name}/credentials`: the same data as the original tool's aliases, by id or index."""
    ids = [e.credential.id for e in gw.runtime.pools["k2think"].entries]
    with admin(gw) as http:
        listed = http.get("/admin/providers/k2think/credentials").json()
        assert listed["status"] == "success" and listed["data"] == http.get("/admin/tokens/stats").json()["data"]
        gw.runtime.pools["k2think"].disable(gw.runtime.pools["k2think"].entries[2])
        by_id = http.post(f"/admin/providers/k2think/credentials/{ids[2]}/reset").json()
        assert by_id["message"] == f"Credential {ids[2]} reset" and by_id["data"]["state"] == "active"
        assert http.post("/admin/providers/k2think/credentials/1/reset").json()["data"]["id"] == ids[1]
        missing = http.post("/admin/providers/k2think/credentials/nope/reset")
        assert missing.status_code == 404 and "nope" in missing.json()["message"]
        assert http.post("/admin/providers/k2think/credentials/reset-all").json()["data"]["active_tokens"] == 3
        assert http.post("/admin/providers/k2think/credentials/reload").json()["data"]["total_tokens"] == 3
        refresh = http.post("/admin/providers/k2think/credentials/force-refresh")
        assert refresh.status_code == 400 and "ENABLE_TOKEN_AUTO_UPDATE" in refresh.json()["message"]
        unknown = http.get("/admin/providers/nobody/credentials")
        assert unknown.status_code == 404 and unknown.json() == {"status": "error", "message": "Unknown provider 'nobody'"}
        no_pool = http.get("/admin/providers/openai/credentials")
        assert no_pool.status_code == 409 and "OPENAI_COMPAT_BASE_URL" in no_pool.json()["message"]


def test_health_is_degraded_while_no_credential_of_a_pool_is_usable(gw: GatewayServer) -> None:
    """A monitor reading /health learns that k2think cannot answer, not "ok" beside 0 active credentials."""
    ids = [e.credential.id for e in gw.runtime.pools["k2think"].entries]
    assert httpx.get(gw.base_url + "/health").json()["status"] == "ok"
    with admin(gw) as http:
        for credential in ids:
            assert http.post(f"/admin/pools/k2think/{credential}/disable").status_code == 200
        health = httpx.get(gw.base_url + "/health")
        assert health.status_code == 200  # still up: load balancers read the code, monitors the status
        assert health.json()["status"] == "degraded"
        assert health.json()["providers"]["k2think"]["credentials"]["active"] == 0
        assert http.post(f"/admin/pools/k2think/{ids[1]}/enable").status_code == 200
    assert httpx.get(gw.base_url + "/health").json()["status"] == "ok"
