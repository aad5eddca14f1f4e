"""Shared helpers for pool and admin tests: admin clients, accounts files, concurrent chats."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.harness import GatewayServer

MODEL = "MBZUAI-IFM/K2-Think-v2"
HI = [{"role": "user", "content": "hi"}]
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def admin(gw: GatewayServer, key: str | None = None) -> httpx.Client:
    key = key or gw.runtime.admin_keys[0]
    return httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def auto_update_settings(base_url: str, tmp_path: Path, **extra: object) -> dict[str, object]:
    """Gateway settings for auto update from `tmp_path/accounts.txt` into `tmp_path/tokens.txt`, fast."""
    return {
        "k2think_base_url": base_url, "enable_token_auto_update": True,
        "accounts_file": tmp_path / "accounts.txt", "tokens_file": tmp_path / "tokens.txt",
        "token_refresh_min_interval": 0, "signin_retry_backoff": 0.01, "tokens_reload_interval": 0.2, **extra,
    }


def updater_status(gw: GatewayServer) -> dict[str, Any]:
    with admin(gw) as http:
        body = http.get("/admin/tokens/updater/status").json()
    assert body["status"] == "success"
    return body["data"]  # type: ignore[no-any-return]


def stats(gw: GatewayServer) -> dict[str, Any]:
    with admin(gw) as http:
        response = http.get("/admin/tokens/stats")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    return body["data"]  # type: ignore[no-any-return]


def write_accounts(path: Path, accounts: Iterable[tuple[str, str]], field: str = "password") -> Path:
    path.write_text("".join(f'{{"email": "{email}", "{field}": "{password}"}}\n' for email, password in accounts))
    return path


def chat(gw: GatewayServer) -> str:
    reply = gw.openai().chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    return reply.choices[0].message.content or ""


def concurrent_chats(gw: GatewayServer, n: int) -> list[Any]:
    """n requests at once through the official async SDK; returns replies or exceptions."""

    async def run() -> list[Any]:
        client = openai.AsyncOpenAI(base_url=gw.base_url + "/v1", api_key=gw.api_key, max_retries=0, timeout=60)
        async with client:
            calls = [client.chat.completions.create(model=MODEL, messages=HI) for _ in range(n)]  # type: ignore[arg-type]
            return list(await asyncio.gather(*calls, return_exceptions=True))

    return asyncio.run(run())


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def assert_no_full_token(text: str, tokens: Iterable[str]) -> None:
    for token in tokens:
        assert token not in text, "a full token leaked"
    for candidate in JWT_RE.findall(text):
        raise AssertionError(f"something JWT-shaped appears in full: {candidate[:12]}…")
