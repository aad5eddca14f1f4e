"""Kimi's wiring: refresh tokens (or a guest device), one stream per account, sessions per `user`."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import PoolExhausted
from chatbridge.core.findings import Finding
from chatbridge.core.types import Route
from chatbridge.features.sessions import SessionPlanner, SessionStore
from chatbridge.pool.lifecycle import PoolLifecycle
from chatbridge.pool.pool import CredentialPool
from chatbridge.pool.source import CredentialSource
from chatbridge.providers.kimi.auth import KimiAuthClient
from chatbridge.providers.kimi.checks import EXAMPLE_ENV, kimi_findings
from chatbridge.providers.kimi.protocol import KimiEndpoints
from chatbridge.providers.kimi.provider import CATALOG_TIMEOUT, KimiConfig, KimiProvider
from chatbridge.providers.kimi.settings import KimiSettings
from chatbridge.providers.kimi.source import ENV_FILE_NAME, GuestSource, KimiTokenSource
from chatbridge.providers.wiring import ProviderPlugin, ProviderWiring, WiringContext

NAME = "kimi"
RENEW_AHEAD = 240.0  # kimi.md (2026): renew 1–4 minutes before `exp`, with jitter (the lifecycle's: 3–4 minutes)


class KimiLifecycle(PoolLifecycle):
    """Kimi's renewal timing: `RENEW_AHEAD` at most (set in its settings below); an access token given as
    the credential is not renewed ahead (nothing can renew it), only looked at once it has expired."""

    def renew_ahead(self, credential: Credential) -> float:
        if credential.extra.get("renewable") is False:
            return 0.0
        return super().renew_ahead(credential)


class KimiPlugin(ProviderPlugin):
    name = NAME
    settings_class = KimiSettings
    example_env = EXAMPLE_ENV
    base_url_setting = "kimi_base_url"

    def disabled_reason(self, section: KimiSettings) -> str | None:
        return None if section.kimi_enabled else "disabled (KIMI_ENABLED=false)"

    def build(self, section: KimiSettings, context: WiringContext) -> ProviderWiring:
        endpoints = KimiEndpoints(section.base, section.auth_base)
        auth = KimiAuthClient(endpoints, context.http)
        state = context.store.namespace(NAME)
        source: CredentialSource
        if section.is_guest:
            source = GuestSource(state, auth.register)
        else:
            source = KimiTokenSource(section.refresh_tokens, section.kimi_tokens_file, state, auth.refresh,
                                     env_file=context.data_dir / ENV_FILE_NAME, lock_wait=context.http.request_timeout)
        try:
            found = source.load()
        except (OSError, UnicodeDecodeError):
            found = []  # the lifecycle says what is wrong with the file when it starts
        pool = CredentialPool(NAME, found, max_failures=context.pool.max_failures, default_cooldown=context.pool.cooldown,
                              max_streams=section.kimi_max_streams_per_account, renew_on_auth=True)

        @contextlib.asynccontextmanager
        async def catalog_credential() -> AsyncIterator[Credential | None]:
            try:
                lease = await pool.acquire(timeout=min(CATALOG_TIMEOUT, context.http.request_timeout))
            except PoolExhausted:
                yield None
                return
            try:
                yield lease.credential
            finally:
                lease.release()  # reading the catalog says nothing about the credential

        provider = KimiProvider(KimiConfig(endpoints, context.http), catalog_credential)

        def routes() -> list[Route]:
            return [Route(m.id, NAME, m.upstream or m.id, listed=m.listed, owned_by="moonshot", options=m.options())
                    for m in provider.catalog]

        settings = context.lifecycle_settings()
        settings = dataclasses.replace(settings, refresh_ahead=min(settings.refresh_ahead, RENEW_AHEAD))
        lifecycle = KimiLifecycle(pool, source, settings=settings, store=context.store)
        planner = SessionPlanner(SessionStore(context.store.namespace("sessions"), context.sessions))
        if section.is_guest:
            mode, report = "guest", "guest mode: a registered device (set KIMI_REFRESH_TOKEN or KIMI_TOKENS_FILE for accounts)"
        else:
            named = [("KIMI_REFRESH_TOKEN", bool(section.refresh_tokens)),
                     (str(section.kimi_tokens_file), section.kimi_tokens_file is not None)]
            where = " and ".join(name for name, configured in named if configured)
            mode, report = "token", f"{len(found)} account(s) from {where}"
        report += f"; {section.kimi_max_streams_per_account} stream(s) per account; sessions per `user`"
        return ProviderWiring(provider, mode=mode, report=report, routes=routes, pool=pool, lifecycle=lifecycle,
                              closers=[auth], planner=planner,
                              no_refresh_reason="its access tokens are renewed one by one from their refresh tokens")

    def checks(self, section: KimiSettings, data_dir: Path) -> Sequence[Finding]:
        return kimi_findings(section)


PLUGIN = KimiPlugin()
