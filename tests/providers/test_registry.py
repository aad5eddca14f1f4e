"""A provider is a package plus one registry line: the test provider, registered the documented way, serves."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from chatbridge.config import Settings
from chatbridge.providers import registry
from tests.harness import GatewayServer
from tests.providers.mock.wiring import PLUGIN as MOCK


@pytest.fixture
def mock_registered() -> Iterator[None]:
    registry.register("mock", "tests.providers.mock.wiring:PLUGIN")
    try:
        yield
    finally:
        registry.unregister("mock")


def test_a_registered_provider_serves_through_the_gateway(
    mock_registered: None, start_gateway: Callable[..., GatewayServer],
) -> None:
    gw = start_gateway(k2think_enabled=False, mock_enabled=True, mock_credentials=2)
    reply = gw.openai().chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello there"
    assert MOCK.provider is not None and MOCK.provider.calls[-1].credential is not None
    with httpx.Client(base_url=gw.base_url, timeout=10) as http:
        health = http.get("/health").json()["providers"]
        admin = {"Authorization": f"Bearer {gw.runtime.admin_keys[0]}"}
        credentials = http.get("/admin/providers/mock/credentials", headers=admin).json()["data"]
    assert health["mock"]["mode"] == "pool" and health["mock"]["credentials"]["total"] == 2
    assert [c["id"] for c in credentials["tokens"]] == ["mock-0", "mock-1"]
    assert "mock: 2 credential(s)" in gw.runtime.report


def test_a_disabled_provider_says_why_at_start(mock_registered: None, start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway()
    assert "mock: disabled (MOCK_ENABLED=false)" in gw.runtime.report
    assert "mock" not in gw.runtime.providers


def test_settings_sections_read_the_same_environment(mock_registered: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCK_CREDENTIALS", "3")
    settings = Settings(_env_file=None, mock_enabled=True)
    assert settings.section("mock").mock_credentials == 3 and settings.section("mock").mock_enabled is True
    assert settings.mock_credentials == 3  # a provider's variable, read from the whole
    with pytest.raises(AttributeError):
        _ = settings.no_such_setting


def test_a_provider_that_cannot_be_imported_names_its_extra() -> None:
    registry.register("broken", "chatbridge.providers.no_such_package.wiring:PLUGIN")
    try:
        with pytest.raises(registry.ProviderImportError, match=r"pip install 'chatbridge\[broken\]'"):
            registry.plugin("broken")
    finally:
        registry.unregister("broken")


@pytest.mark.parametrize("name", ["k2think", "kiro"])
def test_no_module_outside_a_provider_package_names_a_provider(name: str) -> None:
    """`grep -ril <name> src/chatbridge` lists only the provider's package and the registry."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "src" / "chatbridge"
    mentions = sorted(
        str(path.relative_to(root)) for path in root.rglob("*.py")
        if name in path.read_text(encoding="utf-8").lower() and f"providers/{name}/" not in str(path)
    )
    assert mentions == ["providers/registry.py"]


def test_no_module_outside_the_kimi_package_names_kimi() -> None:
    """The same for Kimi: sessions, pseudo-streaming and Connect framing are generic."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "src" / "chatbridge"
    mentions = sorted(
        str(path.relative_to(root)) for path in root.rglob("*.py")
        if "kimi" in path.read_text(encoding="utf-8").lower() and "providers/kimi/" not in str(path)
    )
    assert mentions == ["providers/registry.py"]
