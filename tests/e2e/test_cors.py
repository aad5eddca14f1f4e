"""Browser clients: CORS_ORIGINS, preflights answered before the key check, CORS headers on every answer.

Raw HTTP, as a browser sends it: a preflight carries no key, only Origin and
Access-Control-Request-*.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator

MODEL = "MBZUAI-IFM/K2-Think-v2"
PAGE = "http://localhost:3000"
PREFLIGHT = {"Origin": PAGE, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"}


def _http(gw: GatewayServer, key: bool = True) -> httpx.Client:
    headers = {"Origin": PAGE, **({"Authorization": f"Bearer {gw.api_key}"} if key else {})}
    return httpx.Client(base_url=gw.base_url, headers=headers, timeout=30)


def test_a_preflight_is_answered_before_the_key_check(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True, cors_origins=f"{PAGE}, https://chat.example.com/")
    with httpx.Client(base_url=gw.base_url, timeout=30) as http:
        preflight = http.options("/v1/chat/completions", headers=PREFLIGHT)
        admin = http.options("/admin/pools", headers={**PREFLIGHT, "Origin": "https://chat.example.com",
                                                      "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == PAGE
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].lower().split(",")}
    assert {"authorization", "content-type", "x-stainless-os"} <= allowed
    assert admin.status_code == 200 and admin.headers["access-control-allow-origin"] == "https://chat.example.com"


def test_every_answer_carries_the_cors_headers(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True, cors_origins=PAGE)
    hi = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with _http(gw) as http, _http(gw, key=False) as anonymous:
        answers = {
            "chat": http.post("/v1/chat/completions", json=hi),
            "stream": http.post("/v1/chat/completions", json={**hi, "stream": True}),
            "models": http.get("/v1/models"),
            "health": anonymous.get("/health"),
            "no key": anonymous.post("/v1/chat/completions", json=hi),
            "bad request": http.post("/v1/chat/completions", content=b"{nope"),
            "unknown model": http.post("/v1/chat/completions", json={**hi, "model": "nope"}),
            "unknown route": http.get("/v1/nothing"),
        }
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {"chat": 200, "stream": 200, "models": 200, "health": 200, "no key": 401, "bad request": 400,
                        "unknown model": 404, "unknown route": 404}
    assert answers["stream"].text.endswith("data: [DONE]\n\n")
    for name, response in answers.items():
        assert response.headers.get("access-control-allow-origin") == PAGE, name
        exposed = {h.strip() for h in response.headers["access-control-expose-headers"].split(",")}
        assert {"x-request-id", "request-id"} <= exposed, name


def test_a_wildcard_allows_any_origin(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True, cors_origins="*")
    with httpx.Client(base_url=gw.base_url, timeout=30) as http:
        preflight = http.options("/v1/models", headers={**PREFLIGHT, "Origin": "https://anything.example"})
        models = http.get("/v1/models", headers={"Origin": "https://anything.example",
                                                 "Authorization": f"Bearer {gw.api_key}"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    assert models.status_code == 200 and models.headers["access-control-allow-origin"] == "*"


def test_an_origin_not_listed_gets_no_cors(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True, cors_origins=PAGE)
    with httpx.Client(base_url=gw.base_url, timeout=30) as http:
        preflight = http.options("/v1/chat/completions", headers={**PREFLIGHT, "Origin": "https://evil.example"})
        models = http.get("/v1/models", headers={"Origin": "https://evil.example", "Authorization": f"Bearer {gw.api_key}"})
    assert preflight.status_code == 400
    assert preflight.json()["error"]["code"] == "cors_not_allowed" and "CORS_ORIGINS" in preflight.json()["error"]["message"]
    assert "access-control-allow-origin" not in preflight.headers
    assert models.status_code == 200 and "access-control-allow-origin" not in models.headers


def test_cors_is_off_by_default(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True)
    with httpx.Client(base_url=gw.base_url, timeout=30) as http:
        preflight = http.options("/v1/chat/completions", headers=PREFLIGHT)
    assert preflight.status_code == 401 and "access-control-allow-origin" not in preflight.headers
