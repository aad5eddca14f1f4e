"""Fixtures that pair the gateway with an upstream emulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator


@pytest.fixture
def k2_gateway(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer]) -> Callable[..., GatewayServer]:
    """Factory: a gateway in token mode (one valid token) or guest mode (`guest=True`)."""

    def start(guest: bool = False, **overrides: Any) -> GatewayServer:
        if not guest and "k2think_token" not in overrides and "tokens_file" not in overrides:
            overrides["k2think_token"] = k2emu.mint_token()
        return start_gateway(k2think_base_url=k2emu.base_url, **overrides)

    return start
