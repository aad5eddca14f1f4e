"""The mock provider's settings section, read from the environment like any provider's."""

from __future__ import annotations

from chatbridge.providers.settings import ProviderSettings


class MockSettings(ProviderSettings):
    mock_enabled: bool = False
    mock_credentials: int = 0  # 0: no pool (like an API-key upstream)
    mock_max_streams: int | None = None
    mock_native_tools: bool = True
