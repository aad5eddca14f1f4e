"""Refresh outcomes counted where a pool renews a credential, and a waiting request ended at the grace."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import REGISTRY

from chatbridge.core.errors import AttemptsFailed, PoolExhausted
from chatbridge.pool.source import RenewalRejected
from tests.harness import GatewayServer
from tests.pool.test_renewal import RefreshingSource, answer, run_and, wired
from tests.upstreams import OpenAICompatEmulator


def refreshes(outcome: str) -> float:
    return REGISTRY.get_sample_value("chatbridge_credential_refreshes_total", {"provider": "mock", "outcome": outcome}) or 0.0


@pytest.mark.parametrize(("failure", "outcome"), [
    (None, "renewed"),
    (RenewalRejected("the refresh token was revoked"), "renewal_rejected"),
    (ConnectionError("auth server unreachable"), "renewal_failed"),
])
def test_renewal_outcomes_are_counted(failure: Exception | None, outcome: str) -> None:
    source = RefreshingSource(failure=failure)
    pipeline, lifecycle, _ = wired(source)
    before = {name: refreshes(name) for name in ("renewed", "renewal_rejected", "renewal_failed")}

    async def run() -> None:
        await lifecycle.astart()
        try:
            if failure is None:
                await answer(pipeline)
            else:
                with pytest.raises((PoolExhausted, AttemptsFailed)):
                    await answer(pipeline)
        finally:
            await lifecycle.aclose()

    run_and(run)
    moved = {name: refreshes(name) - value for name, value in before.items()}
    assert moved == {name: (1.0 if name == outcome else 0.0) for name in before}


def test_a_non_streamed_request_still_waiting_at_the_grace_gets_a_503(
        compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    compat_emu.delay_first_byte = 8.0  # the upstream takes longer than the grace
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", k2think_enabled=False,
                       shutdown_grace_seconds=0.5, request_timeout=30)
    result: dict[str, object] = {}

    def ask() -> None:
        response = httpx.post(gw.base_url + "/v1/chat/completions", timeout=20,
                              headers={"Authorization": f"Bearer {gw.api_key}"},
                              json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
        result.update(status=response.status_code, body=response.json(), at=time.monotonic())

    asker = threading.Thread(target=ask)
    asker.start()
    deadline = time.monotonic() + 15
    while not compat_emu.requests_to("/v1/chat/completions") and time.monotonic() < deadline:
        time.sleep(0.02)  # until the request is with the upstream
    assert compat_emu.requests_to("/v1/chat/completions")
    stopping = time.monotonic()
    gw.stop()  # uvicorn's shutdown, as on SIGTERM (the server runs in a thread here)
    asker.join(10)
    assert result["status"] == 503
    assert result["body"]["error"]["code"] == "shutting_down"  # type: ignore[index]
    assert float(result["at"]) - stopping < 2.0  # type: ignore[arg-type]
