"""What a refused key says, and what the published spec says about keys and methods (issue 10, 22 and 23)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.harness import GatewayServer

MODEL = "MBZUAI-IFM/K2-Think-v2"
HI = [{"role": "user", "content": "hi"}]


def test_a_missing_key_says_invalid_api_key(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True)
    with httpx.Client(base_url=gw.base_url, timeout=30) as http:
        missing = http.post("/v1/chat/completions", json={"model": MODEL, "messages": HI})
        empty = http.get("/v1/models", headers={"x-api-key": ""})
    for response in (missing, empty):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError) as caught:  # the SDK sends no key-less request: a wrong one
        gw.openai(api_key="sk-wrong").chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_api_key"


def test_a_client_key_on_admin_is_told_an_admin_key_is_needed(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True)
    with httpx.Client(base_url=gw.base_url, timeout=30) as http:
        client_key = http.get("/admin/pools", headers={"Authorization": f"Bearer {gw.api_key}"})
        random_key = http.get("/admin/pools", headers={"Authorization": "Bearer sk-some-other-key-0123456789"})
        no_key = http.get("/admin/pools")
    assert client_key.status_code == random_key.status_code == no_key.status_code == 401
    message = client_key.json()["message"]
    assert "admin key" in message and "ADMIN_API_KEY" in message and "client key" in message
    assert client_key.json() == random_key.json(), "a client key must not be told apart from any wrong key"
    assert "admin key" in no_key.json()["message"]
    admin_key = gw.runtime.admin_keys[0]
    for response in (client_key, random_key, no_key):
        assert admin_key not in response.text and admin_key[:10] not in response.text and gw.api_key not in response.text


def _spec(gw: GatewayServer) -> dict[str, Any]:
    with httpx.Client(base_url=gw.base_url, timeout=30) as http:
        spec: dict[str, Any] = http.get("/openapi.json").json()
    return spec


def test_the_spec_marks_exactly_the_routes_that_need_a_key(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True)
    spec = _spec(gw)
    assert "security" not in spec, "no global requirement: /health is open"
    schemes = spec["components"]["securitySchemes"]
    operations = [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]
    assert {path for path, _, _ in operations} >= {"/health", "/v1/models", "/v1/chat/completions", "/admin/pools"}
    with httpx.Client(base_url=gw.base_url, timeout=30) as http:
        for path, method, op in operations:
            names = {name for requirement in op["security"] for name in requirement}
            if path.startswith("/v1/"):
                assert names == {"clientKey", "clientKeyHeader"}, (path, method)
            elif path.startswith("/admin"):
                assert names == {"adminKey", "adminKeyHeader"}, (path, method)
            else:
                assert op["security"] == [], (path, method)
            assert names <= set(schemes)
            if names:
                assert "401" in op["responses"], (path, method)
                assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].startswith("#/components/schemas/")
            # what the spec says is what the gateway does: no key, and a 401 exactly where a key is needed
            concrete = path.replace("{model_id}", MODEL).replace("{provider}", "k2think").replace("{credential}", "x") \
                .replace("{action}", "reset").replace("{index}", "0")
            status = http.request(method.upper(), concrete).status_code
            assert (status == 401) == bool(names), (method, path, status)


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("POST", "/v1/models", "GET"),
    ("DELETE", "/health", "GET"),
    ("GET", "/admin/pools/k2think/x/reset", "POST"),
    ("GET", "/v1/chat/completions", "POST"),
])
def test_a_405_names_the_allowed_methods(method: str, path: str, allowed: str, k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(guest=True)
    key = gw.runtime.admin_keys[0] if path.startswith("/admin") else gw.api_key
    with httpx.Client(base_url=gw.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
        response = http.request(method, path)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {allowed}
