"""Shared pieces of the Kiro end-to-end tests: settings pointing at the emulator, token files, waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.harness import GatewayServer
from tests.upstreams import KiroEmulator


def kiro_settings(emu: KiroEmulator, **overrides: Any) -> dict[str, Any]:
    """Every Kiro host pointed at the emulator; K2Think off so only Kiro answers."""
    return {"k2think_enabled": False, "kiro_api_base": emu.base_url, "kiro_management_base": emu.base_url,
            "kiro_auth_base": emu.base_url, "kiro_oidc_base": emu.base_url, **overrides}


def ide_token_file(home: Path) -> Path:
    return home / ".aws" / "sso" / "cache" / "kiro-auth-token.json"


def wait_for(condition: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def credentials(gateway: GatewayServer) -> list[dict[str, Any]]:
    with httpx.Client(base_url=gateway.base_url, timeout=10,
                      headers={"Authorization": f"Bearer {gateway.runtime.admin_keys[0]}"}) as http:
        response = http.get("/admin/providers/kiro/credentials")
    assert response.status_code == 200, response.text
    tokens: list[dict[str, Any]] = response.json()["data"]["tokens"]
    return tokens
