"""The pool as an operator runs it: `python -m chatbridge serve`, its own stdout/stderr, tokens never printed.

The in-process test (test_pool_revoked_tokens_under_load.py) greps log records without the redacting filter;
these run the real command with LOG_FORMAT text and json and grep everything the process
printed, the way an operator's log collector would see it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.harness import GatewayProcess
from tests.pool.helpers import HI, MODEL, assert_no_full_token, write_accounts
from tests.upstreams import K2ThinkEmulator

CLIENT_KEY = "sk-client-must-show-0123456789"
ACCOUNTS = [(f"worker{i}@example.com", f"pw-must-show-{i}-secret") for i in range(3)]


def _admin_key(process: GatewayProcess) -> str:
    found = re.search(r"admin key \(for /admin/\): generated.*\n\s+(sk-admin-\S+)", process.output)
    assert found, process.output
    return found.group(1)


def _admin(process: GatewayProcess, method: str, path: str, key: str | None, timeout: float = 60) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, process.base_url + path, headers=headers, timeout=timeout)


def _concurrent(process: GatewayProcess, n: int) -> list[Any]:
    """n requests at once with the official SDK, every other one streamed."""

    async def one(client: openai.AsyncOpenAI, stream: bool) -> str:
        if not stream:
            reply = await client.chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
            return reply.choices[0].message.content or ""
        chunks = await client.chat.completions.create(model=MODEL, messages=HI, stream=True)  # type: ignore[arg-type]
        return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])

    async def run() -> list[Any]:
        client = openai.AsyncOpenAI(base_url=process.base_url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60)
        async with client:
            return list(await asyncio.gather(*(one(client, i % 2 == 1) for i in range(n)), return_exceptions=True))

    return asyncio.run(run())


def _assert_log_format(output: str, log_format: str) -> None:
    """The check greps real log lines: make sure there are some, in the format asked for."""
    if log_format == "json":
        assert re.search(r'^\{"ts":.*"level":"WARNING","logger":"chatbridge\.pipeline"', output, re.M), output[-2000:]
    else:
        assert re.search(r"^\S+ \S+ WARNING chatbridge\.pipeline: attempt 1 on k2think failed \(auth\)", output, re.M), output[-2000:]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_five_tokens_two_revoked_200_requests_through_the_real_command(
    k2emu: K2ThinkEmulator, tmp_path: Path, log_format: str
) -> None:
    tokens = [k2emu.mint_token() for _ in range(5)]
    revoked = [tokens[1], tokens[3]]
    for token in revoked:
        k2emu.revoke(token)
    (tmp_path / "tokens.txt").write_text("\n".join(tokens) + "\n")
    env = {"DATA_DIR": str(tmp_path / "data"), "K2THINK_BASE_URL": k2emu.base_url, "TOKENS_FILE": str(tmp_path / "tokens.txt"),
           "VALID_API_KEY": CLIENT_KEY, "LOG_FORMAT": log_format, "LOG_LEVEL": "DEBUG"}
    process = GatewayProcess(env, tmp_path).start()
    try:
        results = _concurrent(process, 200)
        admin_key = _admin_key(process)
        stats = _admin(process, "GET", "/admin/tokens/stats", admin_key)
        refused = [_admin(process, "GET", "/admin/tokens/stats", key) for key in (None, CLIENT_KEY)]
    finally:
        process.stop()

    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]
    assert all(results)
    data = stats.json()["data"]
    assert (data["total_tokens"], data["active_tokens"], data["disabled_tokens"]) == (5, 3, 2)
    assert [t["state"] for t in data["tokens"]] == ["active", "disabled", "active", "disabled", "active"]
    assert all("401" in t["last_error"] for t in data["tokens"] if t["state"] == "disabled")
    assert sum(t["requests_served"] for t in data["tokens"]) == 200
    for response in refused:
        assert response.status_code == 401 and set(response.json()) == {"status", "message"}
        assert "token" not in response.text.lower().replace("api key", "")
    output = process.output
    _assert_log_format(output, log_format)
    assert_no_full_token(output + stats.text, tokens)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_auto_update_writes_a_fresh_tokens_file_and_force_update_replaces_it(
    k2emu: K2ThinkEmulator, tmp_path: Path, log_format: str
) -> None:
    for email, password in ACCOUNTS:
        k2emu.add_account(email, password)
    accounts = write_accounts(tmp_path / "accounts.txt", [*ACCOUNTS, ("nobody@example.com", "pw-nobody-secret")])
    accounts.chmod(0o600)
    tokens_file = tmp_path / "tokens.txt"
    crashed = tmp_path / ".tokens.txt.a1b2c3.tmp"  # what a write killed half-way leaves behind
    crashed.write_text("eyJhbGciOi-half-a-token")
    env = {"DATA_DIR": str(tmp_path / "data"), "K2THINK_BASE_URL": k2emu.base_url, "TOKENS_FILE": str(tokens_file),
           "ACCOUNTS_FILE": str(accounts), "ENABLE_TOKEN_AUTO_UPDATE": "true", "VALID_API_KEY": CLIENT_KEY,
           "LOG_FORMAT": log_format, "LOG_LEVEL": "DEBUG", "TOKENS_RELOAD_INTERVAL": "0.2"}
    process = GatewayProcess(env, tmp_path).start()
    try:
        admin_key = _admin_key(process)
        deadline_ok = _wait(lambda: _admin(process, "GET", "/admin/tokens/stats", admin_key).json()["data"]["total_tokens"] == 3)
        first = tokens_file.read_text()
        first_tokens = [line for line in first.splitlines() if not line.startswith("#")]
        answers = _concurrent(process, 20)
        k2emu.token_lifetime = 7200  # the emulator's JWTs are deterministic per second: make the next ones differ
        forced = _admin(process, "POST", "/admin/tokens/updater/force-update", admin_key)
        status = _admin(process, "GET", "/admin/tokens/updater/status", admin_key)
        refused = [_admin(process, "POST", "/admin/tokens/updater/force-update", key) for key in (None, CLIENT_KEY)]
        after = _concurrent(process, 10)
    finally:
        process.stop()

    assert deadline_ok
    assert not crashed.exists()  # cleaned at start
    assert sorted(first_tokens) == sorted(k2emu.issued_tokens[e][0] for e, _ in ACCOUNTS)
    assert first.startswith("# written by chatbridge") and tokens_file.stat().st_mode & 0o777 == 0o600
    assert not [r for r in answers + after if isinstance(r, BaseException)]
    assert forced.status_code == 200, forced.text
    body = forced.json()
    assert body["status"] == "success" and body["data"]["result"]["signed_in"] == 3 and body["data"]["result"]["failed"] == 1
    assert (tmp_path / "tokens.txt.backup").read_text() == first
    second = [line for line in tokens_file.read_text().splitlines() if not line.startswith("#")]
    assert sorted(second) == sorted(k2emu.issued_tokens[e][-1] for e, _ in ACCOUNTS) and not set(second) & set(first_tokens)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert status.json()["data"]["update_count"] == 2 and status.json()["data"]["last_error"].startswith("1 account(s) failed")
    assert all(r.status_code == 401 for r in refused)
    assert set(k2emu.used_tokens[-10:]) <= set(second)  # the pool serves the fresh tokens
    secrets = [t for issued in k2emu.issued_tokens.values() for t in issued] + [p for _, p in ACCOUNTS] + ["pw-nobody-secret"]
    output = process.output
    assert "token refresh done" in output and "nobody@example.com" not in output
    assert_no_full_token(output + forced.text + status.text, secrets)


def _wait(condition: Any, timeout: float = 15.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False
