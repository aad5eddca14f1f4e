"""Shared fixtures: a clean environment and the real gateway on a loopback port."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import _LEAKY_VARS, GatewayServer, make_settings
from tests.upstreams import K2ThinkEmulator, KiroEmulator, OpenAICompatEmulator


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Real tokens, keys and proxies from the developer's shell never reach a test."""
    for name in _LEAKY_VARS:
        monkeypatch.delenv(name, raising=False)
    # The Kiro IDE's login lives under HOME (~/.aws/sso/cache): a developer's own must never be read or refreshed.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # no stray .env from the working tree


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayServer]]:
    """Factory: start_gateway(**settings) → a running gateway, stopped after the test."""
    started: list[GatewayServer] = []

    def start(**overrides: Any) -> GatewayServer:
        server = GatewayServer(make_settings(tmp_path, **overrides)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def k2emu() -> Iterator[K2ThinkEmulator]:
    with K2ThinkEmulator() as emulator:
        yield emulator


@pytest.fixture
def kiro_emu() -> Iterator[KiroEmulator]:
    with KiroEmulator() as emulator:
        yield emulator


@pytest.fixture
def compat_emu() -> Iterator[OpenAICompatEmulator]:
    with OpenAICompatEmulator() as emulator:
        yield emulator


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
