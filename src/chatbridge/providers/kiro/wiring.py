"""Kiro's wiring: its credentials (token files, environment tokens, API keys), a renewing pool and its models."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from chatbridge.core.credentials import Credential
from chatbridge.core.findings import Finding
from chatbridge.core.types import Route
from chatbridge.pool.lifecycle import PoolLifecycle
from chatbridge.pool.pool import CredentialPool, CredentialState
from chatbridge.providers.kiro.checks import EXAMPLE_ENV, kiro_findings
from chatbridge.providers.kiro.credentials import NAME, account_of
from chatbridge.providers.kiro.models import LEGACY_ALIASES, PUBLIC_IDS, aliases
from chatbridge.providers.kiro.provider import KiroConfig, KiroProvider
from chatbridge.providers.kiro.refresh import KiroAuthClient
from chatbridge.providers.kiro.settings import KiroSettings, default_token_file
from chatbridge.providers.kiro.source import KiroCredentialSource, KiroSourceConfig
from chatbridge.providers.wiring import ProviderPlugin, ProviderWiring, WiringContext

OWNER = "kiro"


def source_config(section: KiroSettings, data_dir: Path, lock_timeout: float) -> KiroSourceConfig:
    return KiroSourceConfig(
        token_file=section.token_file, default_token_file=section.kiro_token_file is None,
        token_patterns=tuple(section.token_file_patterns), access_token=section.access_token,
        refresh_token=section.refresh_token, api_keys=tuple(section.api_keys), profile_arn=section.kiro_profile_arn,
        data_dir=data_dir, home=Path.home(), lock_timeout=lock_timeout,
    )


def describe(credentials: list[Credential], section: KiroSettings) -> str:
    """Which logins were found, by kind (no secret, no path beyond the files the user named)."""
    kinds: dict[str, int] = {}
    for credential in credentials:
        account = account_of(credential)
        label = {"social": "social login", "idc": "IdC login", "external_idp": "external login",
                 "api_key": "API key"}[account.auth]
        if account.origin == "env":
            label += " from KIRO_ACCESS_TOKEN/KIRO_REFRESH_TOKEN"
        kinds[label] = kinds.get(label, 0) + 1
    parts = ", ".join(f"{n} {label}" for label, n in kinds.items()) or "no login found yet"
    files = [str(section.token_file), *section.token_file_patterns]
    return f"{len(credentials)} credential(s) ({parts}; token files: {', '.join(files)})"


class KiroPlugin(ProviderPlugin):
    name = NAME
    settings_class = KiroSettings
    example_env = EXAMPLE_ENV

    def disabled_reason(self, section: KiroSettings) -> str | None:
        if section.enabled:
            return None
        return (f"disabled (no Kiro login at {default_token_file()}; log in to the Kiro IDE, or set KIRO_TOKEN_FILE, "
                "KIRO_TOKEN_FILES, KIRO_REFRESH_TOKEN or KIRO_API_KEY)")

    def build(self, section: KiroSettings, context: WiringContext) -> ProviderWiring:
        endpoints = section.endpoints()
        auth = KiroAuthClient(endpoints, context.http)
        source = KiroCredentialSource(source_config(section, context.data_dir, context.http.request_timeout), auth)
        found = source.load()
        pool = CredentialPool(NAME, found, max_failures=context.pool.max_failures,
                              default_cooldown=context.pool.cooldown, renew_on_auth=True)
        provider = KiroProvider(KiroConfig(endpoints, context.http, section.kiro_models_refresh),
                                catalog_credential=lambda: usable(pool))
        source.renewal_listeners.append(provider.credential_ready)  # a catalog read skipped for want of one

        def routes() -> list[Route]:
            listed = [Route(public, NAME, upstream, owned_by=OWNER) for public, upstream in PUBLIC_IDS.items()]
            listed += [Route(m.id, NAME, m.id, owned_by=OWNER) for m in provider.models() if m.id not in PUBLIC_IDS]
            spellings = [Route(alias, NAME, m.id, listed=False, owned_by=OWNER) for m in provider.models() for alias in aliases(m.id)]
            legacy = [Route(alias, NAME, upstream, listed=False, owned_by=OWNER) for alias, upstream in LEGACY_ALIASES.items()]
            return listed + spellings + legacy

        report = describe(found, section)
        if not section.has_explicit_credentials:
            report = f"enabled with zero configuration, from the Kiro IDE's login: {report}"
        report += "".join(f"; skipped {problem}" for problem in source.problems)
        wiring = ProviderWiring(provider, mode="token", report=report, routes=routes, pool=pool, closers=[auth],
                                no_refresh_reason="Kiro credentials are renewed one by one, ahead of their expiry and "
                                                  "after a refusal (POST .../{credential}/reset re-enables one)")
        wiring.lifecycle = PoolLifecycle(pool, source, settings=context.lifecycle_settings(), store=context.store)
        return wiring

    def checks(self, section: KiroSettings, data_dir: Path) -> Sequence[Finding]:
        return kiro_findings(section, data_dir)


def usable(pool: CredentialPool) -> Credential | None:
    """A credential to read the model catalog with: active and not about to expire."""
    now = time.time()
    for entry in pool.entries:
        expires = entry.credential.expires_at
        if entry.state(now) is CredentialState.ACTIVE and (expires is None or expires > now + 60):
            return entry.credential
    return None


PLUGIN = KiroPlugin()
