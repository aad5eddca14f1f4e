"""Kimi provider package (Moonshot's web chat, the Connect RPC API)."""

from chatbridge.providers.kimi.provider import KimiConfig, KimiProvider

__all__ = ["KimiConfig", "KimiProvider"]
