"""The gateway on REDIS_URL: its startup report, /health's "state", and serving through a Redis outage.

A redis-server of the test's own (tests/state/redis_server.py) is killed with -9 and restarted
while the gateway runs; clients are the real `openai` SDK and httpx.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProcess, GatewayServer, free_port
from tests.pool.helpers import wait_for
from tests.state.redis_server import RedisServer
from tests.upstreams import K2ThinkEmulator

MODEL = "MBZUAI-IFM/K2-Think-v2-nothink"
HI = [{"role": "user", "content": "hi"}]


def health(base_url: str) -> dict[str, Any]:
    response = httpx.get(base_url + "/health", timeout=5)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_the_gateway_serves_through_a_redis_outage_and_health_follows(
    k2_gateway: Callable[..., GatewayServer], tmp_path: Path,
) -> None:
    with RedisServer(tmp_path) as redis_server:
        gw = k2_gateway(redis_url=redis_server.url, redis_key_prefix="e2e:", redis_timeout_seconds=0.3)
        client = gw.openai()
        assert client.chat.completions.create(model=MODEL, messages=HI).choices[0].message.content
        body = health(gw.base_url)
        assert body["status"] == "ok" and body["state"] == {"backend": "redis", "up": True, "errors": 0}
        with redis_server.client() as redis:  # pool health lives in Redis (written in the background, soon)
            wait_for(lambda: any(key.startswith((b"e2e:v:pool:", b"e2e:v:pool-shared:")) for key in redis.keys("e2e:*")), timeout=15)

        redis_server.kill()
        start = time.monotonic()
        answer = client.chat.completions.create(model=MODEL, messages=HI)  # served from local state
        assert answer.choices[0].message.content and time.monotonic() - start < 5
        wait_for(lambda: health(gw.base_url)["state"]["up"] is False, timeout=15)
        body = health(gw.base_url)
        assert body["status"] == "degraded" and body["state"]["errors"] >= 1 and body["state"]["backend"] == "redis"

        redis_server.start()
        wait_for(lambda: health(gw.base_url)["state"]["up"] is True, timeout=15)
        assert health(gw.base_url)["status"] == "ok"
        assert client.chat.completions.create(model=MODEL, messages=HI).choices[0].message.content


def test_without_redis_url_the_state_is_embedded(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    body = health(gw.base_url)
    assert body["status"] == "ok" and body["state"] == {"backend": "embedded", "up": True, "errors": 0}


def test_an_unreachable_redis_at_start_is_reported_and_does_not_stop_the_gateway(
    k2emu: K2ThinkEmulator, tmp_path: Path,
) -> None:
    password = "start-pass-" + "Zq81" * 5
    env = {"REDIS_URL": f"redis://:{password}@127.0.0.1:{free_port()}/3", "REDIS_TIMEOUT_SECONDS": "0.3",
           "DATA_DIR": str(tmp_path / "data"), "VALID_API_KEY": "sk-test-redis-down-0001",
           "K2THINK_BASE_URL": k2emu.base_url, "K2THINK_TOKEN": k2emu.mint_token()}
    gateway = GatewayProcess(env, tmp_path).start()
    try:
        body = health(gateway.base_url)
        assert body["status"] == "degraded" and body["state"]["backend"] == "redis" and body["state"]["up"] is False
        answer = httpx.post(gateway.base_url + "/v1/chat/completions", json={"model": MODEL, "messages": HI},
                            headers={"Authorization": "Bearer sk-test-redis-down-0001"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    finally:
        gateway.stop()
    output = gateway.output
    assert "UNREACHABLE" in output and "serving from this process's local state" in output
    assert "redis://:" in output and password not in output  # the URL is shown, its password is not


@pytest.mark.parametrize("url", ["http://redis:6379", "redis://", "redis://host:port/0", "redis://host/db"])
def test_a_bad_redis_url_is_a_clear_startup_error(tmp_path: Path, url: str) -> None:
    env = {**GatewayProcess({}, tmp_path).env, "REDIS_URL": url, "DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run([sys.executable, "-m", "chatbridge", "serve"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "REDIS_URL:" in result.stderr and "redis://" in result.stderr and "Traceback" not in result.stderr


def test_check_config_says_whether_redis_answers_without_showing_its_password(tmp_path: Path) -> None:
    password = "check-pass-" + "Yx42" * 5
    base = {**GatewayProcess({}, tmp_path).env, "DATA_DIR": str(tmp_path / "data")}
    with RedisServer(tmp_path, password=password) as redis_server:
        answering = subprocess.run([sys.executable, "-m", "chatbridge", "check-config"], cwd=tmp_path, text=True,
                                   env={**base, "REDIS_URL": redis_server.url}, capture_output=True, timeout=60)
    dead = subprocess.run([sys.executable, "-m", "chatbridge", "check-config"], cwd=tmp_path, text=True,
                          env={**base, "REDIS_URL": f"redis://:{password}@127.0.0.1:{free_port()}/0"},
                          capture_output=True, timeout=60)
    assert "REDIS_URL" in answering.stdout and "answers" in answering.stdout and answering.returncode == 0
    assert "does not answer" in dead.stdout and "serve from local state" in dead.stdout
    assert password not in answering.stdout + answering.stderr + dead.stdout + dead.stderr
