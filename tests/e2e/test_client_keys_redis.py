"""Client keys across replicas that share the real Redis (database 9 on 127.0.0.1:6379, each test under
a key prefix of its own, deleted afterwards): a per-minute limit of N admits exactly N across two
gateways, a stream cap holds across them, and a key revoked through one is refused by the other
within a second. Skipped, saying so, when no Redis answers."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import redis

from tests.harness import GatewayServer, make_settings
from tests.state.helpers import delete_prefix
from tests.upstreams import K2ThinkEmulator

REDIS_URL = os.environ.get("CHATBRIDGE_KEYS_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
MODEL = "MBZUAI-IFM/K2-Think-v2"
MESSAGES = [{"role": "user", "content": "hi"}]
ADMIN = "sk-admin-replicas-0123456789"


def _reachable() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


pytestmark = pytest.mark.skipif(not _reachable(), reason=f"no Redis answers at {REDIS_URL}")


@pytest.fixture
def replicas(k2emu: K2ThinkEmulator, tmp_path: Path) -> Iterator[tuple[GatewayServer, GatewayServer]]:
    prefix = f"keys-test:{uuid.uuid4().hex}:"
    token = k2emu.mint_token()
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text("keys:\n  - key: sk-team-rpm-0123456789abc\n    name: rpm\n    requests_per_minute: 6\n"
                         "  - key: sk-team-one-0123456789abc\n    name: one\n    max_concurrent_streams: 1\n")
    pair = [GatewayServer(make_settings(tmp_path / f"r{i}", k2think_base_url=k2emu.base_url, k2think_token=token,
                                        admin_api_key=ADMIN, redis_url=REDIS_URL, redis_key_prefix=prefix,
                                        # generous: on a loaded machine a 0.5 s read timeout fails over to the
                                        # local view (by design), and limits are then per replica
                                        redis_timeout_seconds=5.0, client_keys_file=keys_file)).start()
            for i in range(2)]
    yield pair[0], pair[1]
    for gw in pair:
        gw.stop()
    delete_prefix(prefix, REDIS_URL)


def test_a_limit_of_n_per_minute_admits_exactly_n_across_replicas(replicas: tuple[GatewayServer, GatewayServer]) -> None:
    one, two = replicas
    if time.time() % 60 > 50:  # all requests inside one fixed window, so the previous one weighs nothing
        time.sleep(61 - time.time() % 60)

    def call(i: int) -> int:
        gw = (one, two)[i % 2]
        try:
            gw.openai(api_key="sk-team-rpm-0123456789abc").chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
            return 200
        except openai.RateLimitError as exc:
            assert int(exc.response.headers["retry-after"]) >= 1
            return 429

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(call, range(16)))
    assert one.runtime.store is not None and two.runtime.store is not None
    assert one.runtime.store.status().up and two.runtime.store.status().up  # counted in Redis throughout
    assert one.runtime.store.status().errors == 0 and two.runtime.store.status().errors == 0
    assert statuses.count(200) == 6 and statuses.count(429) == 10


def test_a_stream_cap_of_one_holds_across_replicas(replicas: tuple[GatewayServer, GatewayServer],
                                                   k2emu: K2ThinkEmulator) -> None:
    one, two = replicas
    k2emu.slow_stream(6, 0.15)
    started = threading.Event()

    def stream() -> None:
        with one.openai(api_key="sk-team-one-0123456789abc").chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True) as chunks:  # type: ignore[arg-type]
            for _ in chunks:
                started.set()

    worker = threading.Thread(target=stream)
    worker.start()
    assert started.wait(10)
    with pytest.raises(openai.RateLimitError):
        two.openai(api_key="sk-team-one-0123456789abc").chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    worker.join(30)
    k2emu.slow_stream(1, 0.0)
    assert two.openai(api_key="sk-team-one-0123456789abc").chat.completions.create(model=MODEL, messages=MESSAGES).choices  # type: ignore[arg-type]


def test_a_key_revoked_on_one_replica_is_refused_by_the_other_within_a_second(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    one, two = replicas
    admin = {"Authorization": f"Bearer {ADMIN}"}
    added = httpx.post(one.base_url + "/admin/keys", json={"name": "temp"}, headers=admin)
    assert added.status_code == 201
    key = added.json()["data"]["key"]
    deadline = time.monotonic() + 1.0
    while True:  # the other replica takes it up within a second too
        try:
            two.openai(api_key=key).models.list()
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    listed = httpx.get(two.base_url + "/admin/keys", headers=admin).json()["data"]["keys"]
    assert any(k["name"] == "temp" and k["source"] == "api" for k in listed) and key not in str(listed)
    assert httpx.delete(one.base_url + "/admin/keys/temp", headers=admin).status_code == 200
    revoked = time.monotonic()
    while True:
        try:
            two.openai(api_key=key).models.list()
        except openai.AuthenticationError:
            break
        assert time.monotonic() - revoked < 1.0, "the other replica accepted a revoked key after a second"
        time.sleep(0.05)
    # usage from both replicas adds up in Redis
    one.openai(api_key="sk-team-rpm-0123456789abc").chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    two.openai(api_key="sk-team-rpm-0123456789abc").chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    time.sleep(1.3)
    rows = httpx.get(one.base_url + "/admin/usage", params={"key": "rpm"}, headers=admin).json()["data"]["usage"]
    assert [(r["provider"], r["requests"]) for r in rows] == [("k2think", 2)]
