"""Credential pools: selection, health and lifecycle of upstream credentials."""

from chatbridge.pool.pool import CredentialHealth, CredentialPool, CredentialState, Lease

__all__ = ["CredentialHealth", "CredentialPool", "CredentialState", "Lease"]
