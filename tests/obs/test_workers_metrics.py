"""`chatbridge serve --workers 2`: every scrape, whichever worker answers it, counts every request."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx

from tests.harness import GatewayProcess
from tests.obs.scrape import value
from tests.upstreams import OpenAICompatEmulator

ADMIN_KEY = "sk-admin-test-key-9876543210"
API_KEY = "sk-test-client-key-0123456789"
REQUESTS = 24


def test_two_workers_sum_their_counts_in_every_scrape(compat_emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    env = {"OPENAI_COMPAT_BASE_URL": compat_emu.base_url + "/v1", "K2THINK_ENABLED": "false",
           "VALID_API_KEY": API_KEY, "ADMIN_API_KEY": ADMIN_KEY, "DATA_DIR": str(tmp_path / "data")}
    gateway = GatewayProcess(env, tmp_path, command=[sys.executable, "-m", "chatbridge", "serve", "--workers", "2"])
    gateway.start()
    try:
        found = re.search(r"summed from (\S+) \(PROMETHEUS_MULTIPROC_DIR\)", gateway.output)
        assert found, gateway.output
        metrics_dir = Path(found.group(1))
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
        for n in range(REQUESTS):  # a fresh connection each: the kernel spreads them over both workers
            stream = n % 3 == 0
            reply = httpx.post(gateway.base_url + "/v1/chat/completions", json={**body, "stream": stream},
                               headers={"Authorization": f"Bearer {API_KEY}", "Connection": "close"}, timeout=20)
            assert reply.status_code == 200, reply.text
        pids = {m.group(1) for p in metrics_dir.glob("counter_*.db") if (m := re.search(r"_(\d+)\.db$", p.name))}
        scrapes = []
        for _ in range(8):
            scraped = httpx.get(gateway.base_url + "/metrics", timeout=20,
                                headers={"Authorization": f"Bearer {ADMIN_KEY}", "Connection": "close"})
            assert scraped.status_code == 200
            scrapes.append(scraped.text)
    finally:
        gateway.stop()
    assert len(pids) == 2, f"both workers should have answered some requests: {pids}"
    for text in scrapes:
        counted = value(text, "chatbridge_requests_total", route="/v1/chat/completions", model="fake-model", status="200")
        assert counted == REQUESTS
        assert value(text, "chatbridge_request_duration_seconds_count", route="/v1/chat/completions") == REQUESTS
    assert not metrics_dir.exists()  # the private directory goes with the server
