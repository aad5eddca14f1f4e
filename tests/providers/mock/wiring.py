"""The mock provider's plugin: `MOCK_ENABLED=true` turns it on, `MOCK_CREDENTIALS=N` gives it a pool."""

from __future__ import annotations

from chatbridge.core.credentials import Credential
from chatbridge.core.secrets import Secret
from chatbridge.core.types import Route
from chatbridge.providers.wiring import ProviderPlugin, ProviderWiring, WiringContext
from tests.providers.mock.provider import MockProvider, Scenario, hello
from tests.providers.mock.settings import MockSettings


class MockPlugin(ProviderPlugin):
    name = "mock"
    settings_class = MockSettings
    example_env = "# --- mock (tests only) ---\nMOCK_ENABLED=false\n"

    def __init__(self, scenario: Scenario = hello) -> None:
        self.scenario = scenario
        self.provider: MockProvider | None = None

    def disabled_reason(self, section: MockSettings) -> str | None:
        return None if section.mock_enabled else "disabled (MOCK_ENABLED=false)"

    def build(self, section: MockSettings, context: WiringContext) -> ProviderWiring:
        pooled = section.mock_credentials > 0
        provider = MockProvider(self.scenario, native_tools=section.mock_native_tools, requires_credential=pooled)
        self.provider = provider
        pool = None
        if pooled:
            credentials = [
                Credential(id=f"mock-{i}", secret=Secret(f"mock-secret-{i}-0123456789"), provider=self.name)
                for i in range(section.mock_credentials)
            ]
            pool = context.pool.pool(self.name, credentials, max_streams=section.mock_max_streams)

        def routes() -> list[Route]:
            return [Route(m.id, self.name, m.id, owned_by=self.name) for m in provider.models()]

        return ProviderWiring(provider, mode="pool" if pooled else "open", report=f"{section.mock_credentials} credential(s)",
                              routes=routes, pool=pool)


PLUGIN = MockPlugin()
