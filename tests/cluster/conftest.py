"""Three `chatbridge serve` processes sharing one Redis, behind a real nginx on loopback.

`start_cluster(...)` starts, in this order: a redis-server of the test's own (on a free port, so
a test may kill and restart it), the Kimi and OpenAI-compatible emulators, three gateway
processes (the same environment and keys, each its own DATA_DIR, as replicas of one deployment
have) and nginx in the foreground balancing them with least_conn. Everything is torn down even
when a step fails; the logs' tails are printed at teardown (pytest shows them for failed tests).

nginx names the replica that answered in `X-Upstream-Addr` ($upstream_addr), so a test can see
that a conversation, a limit or a credential's state crossed replicas.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import API_KEY, GatewayProcess
from tests.upstreams import KimiEmulator, OpenAICompatEmulator

from .processes import Nginx, RedisServer, find_nginx, find_redis_server

ADMIN_KEY = "sk-admin-cluster-key-0123456789abcdef"
CLIENT_KEY = API_KEY
COMPAT_MODEL = "fake-model"
REPLICAS = 3
SLOT_TTL = 4.0  # SLOT_TTL_SECONDS: small, so a killed replica's slot frees within the test


@dataclass
class Cluster:
    replicas: list[GatewayProcess]
    nginx: Nginx
    redis: RedisServer
    kimi: KimiEmulator
    compat: OpenAICompatEmulator
    kimi_tokens: list[str]
    folder: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """nginx: where a client of the deployment connects."""
        return self.nginx.base_url

    def openai(self, base_url: str | None = None, api_key: str = CLIENT_KEY, **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=(base_url or self.base_url) + "/v1", api_key=api_key, max_retries=0,
                             timeout=kwargs.pop("timeout", 60), **kwargs)

    def anthropic(self, base_url: str | None = None, api_key: str = CLIENT_KEY, **kwargs: Any) -> Any:
        import anthropic

        return anthropic.Anthropic(base_url=base_url or self.base_url, api_key=api_key, max_retries=0,
                                   timeout=kwargs.pop("timeout", 60), **kwargs)

    def replica_of(self, response: Any) -> int:
        """Which replica (0, 1, 2) answered a response that came through nginx."""
        addr = response.headers.get("x-upstream-addr", "")
        last = addr.split(",")[-1].strip()  # nginx lists every upstream it tried; the last one answered
        ports = {f"127.0.0.1:{r.port}": n for n, r in enumerate(self.replicas)}
        assert last in ports, f"no replica named in X-Upstream-Addr: {addr!r}"
        return ports[last]

    def admin(self, replica: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An admin call pinned to one replica (its own port, not through nginx)."""
        return httpx.request(method, self.replicas[replica].base_url + path,
                             headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10, **kwargs)

    def credentials(self, replica: int, provider: str = "kimi") -> list[dict[str, Any]]:
        response = self.admin(replica, "GET", "/admin/pools")
        assert response.status_code == 200, response.text
        return list(response.json()["data"]["providers"][provider]["credentials"])

    def health(self, replica: int) -> dict[str, Any]:
        response = httpx.get(self.replicas[replica].base_url + "/health", timeout=5)
        return dict(response.json())

    def logs(self) -> str:
        parts = [f"--- replica {n} (port {r.port}) ---\n{r.output[-6000:]}" for n, r in enumerate(self.replicas)]
        parts.append(f"--- nginx ---\n{self.nginx.error_log[-3000:]}")
        return "\n".join(parts)


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1,
             until: Callable[[Any], bool] = bool) -> Any:
    """Poll `check` until `until(its value)` holds; fail naming `what` and the last value after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if until(last):
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last seen: {last!r})")


def everywhere(value: Any) -> Callable[[list[Any]], bool]:
    """`until=` for a check that lists one value per replica: every replica shows `value`."""
    return lambda seen: all(v == value for v in seen)


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Factory: start_cluster(kimi_accounts=1, **env) → a running cluster, torn down after the test."""
    nginx_binary, redis_binary = find_nginx(), find_redis_server()
    if nginx_binary is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx; .ci/run installs it)")
    if redis_binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    stack = contextlib.ExitStack()
    started: list[Cluster] = []

    def start(kimi_accounts: int = 1, rotate: bool = False, **env: str) -> Cluster:
        """`rotate=False`: Kimi hands back the same refresh token, so tests that are not about the
        single-flight refresh do not depend on it (three replicas renewing one rotating token at start
        would otherwise leave two holding a dead one)."""
        began = time.monotonic()
        redis = RedisServer(redis_binary, tmp_path / "redis")
        stack.callback(redis.stop)
        redis.start()
        kimi = stack.enter_context(KimiEmulator())
        compat = stack.enter_context(OpenAICompatEmulator())
        kimi.rotate_refresh = rotate
        tokens = [kimi.mint_refresh_token(f"user-{n}") for n in range(kimi_accounts)]
        shared = {
            "VALID_API_KEY": CLIENT_KEY, "ADMIN_API_KEY": ADMIN_KEY, "REDIS_URL": redis.url,
            "K2THINK_ENABLED": "false",
            "KIMI_ENABLED": "true", "KIMI_BASE_URL": kimi.base_url, "KIMI_AUTH_URL": kimi.base_url,
            "KIMI_REFRESH_TOKEN": ",".join(tokens),  # the same secret in every replica's environment
            "OPENAI_COMPAT_BASE_URL": compat.base_url + "/v1", "OPENAI_COMPAT_MODELS": COMPAT_MODEL,
            "REQUEST_TIMEOUT": "30", "SLOT_TTL_SECONDS": str(SLOT_TTL), "LOG_LEVEL": "DEBUG",
            # Above the 0.5 s default: on a loaded CI machine a call that merely took long would send a
            # replica to its local fallback (see the report); the tests are about sharing, not CPU starvation.
            "REDIS_TIMEOUT_SECONDS": "2",
            **env,
        }
        replicas = []
        for n in range(REPLICAS):
            home = tmp_path / f"replica-{n}"
            (home / "home").mkdir(parents=True)
            process = GatewayProcess({**shared, "DATA_DIR": str(home / "data"), "HOME": str(home / "home")}, home)
            stack.callback(process.stop)
            replicas.append(process.spawn())
        spawned = time.monotonic()
        for process in replicas:
            process.wait_ready()
        ready = time.monotonic()
        nginx = Nginx(nginx_binary, tmp_path / "nginx", [r.port for r in replicas])
        stack.callback(nginx.stop)
        nginx.start()
        print(f"cluster: redis and emulators {spawned - began:.1f} s, replicas ready {ready - spawned:.1f} s, "
              f"nginx {time.monotonic() - ready:.1f} s")
        cluster = Cluster(replicas, nginx, redis, kimi, compat, tokens, tmp_path, shared)
        started.append(cluster)
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            print(cluster.logs())
        stack.close()
