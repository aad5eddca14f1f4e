"""Fixtures that pair the gateway with an upstream emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, KimiEmulator


@pytest.fixture
def k2_gateway(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer]) -> Callable[..., GatewayServer]:
    """Factory: a gateway in token mode (one valid token) or guest mode (`guest=True`)."""

    def start(guest: bool = False, **overrides: Any) -> GatewayServer:
        if not guest and "k2think_token" not in overrides and "tokens_file" not in overrides:
            overrides["k2think_token"] = k2emu.mint_token()
        return start_gateway(k2think_base_url=k2emu.base_url, **overrides)

    return start


@pytest.fixture
def kimi_emu() -> Iterator[KimiEmulator]:
    with KimiEmulator() as emulator:
        yield emulator


@pytest.fixture
def kimi_gateway(kimi_emu: KimiEmulator, start_gateway: Callable[..., GatewayServer], tmp_path: Path
                 ) -> Callable[..., GatewayServer]:
    """Factory: a gateway with Kimi only, against the emulator; `accounts=N` refresh tokens in a tokens file
    (`tokens_file` and `kimi_refresh_token` may be given instead; `accounts=0` is guest mode)."""

    def start(accounts: int = 1, **overrides: Any) -> GatewayServer:
        if accounts and "kimi_tokens_file" not in overrides and "kimi_refresh_token" not in overrides:
            tokens = tmp_path / "kimi-tokens.txt"
            tokens.write_text("".join(f"{kimi_emu.mint_refresh_token(f'user-{n}')}\n" for n in range(accounts)))
            overrides["kimi_tokens_file"] = tokens
        return start_gateway(k2think_enabled=False, kimi_enabled=True, kimi_base_url=kimi_emu.base_url,
                             kimi_auth_url=kimi_emu.base_url, **overrides)

    return start
