"""K2Think's wiring: token or guest mode, the tokens file, hot reload and sign-in from an accounts file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from chatbridge.core.credentials import Credential
from chatbridge.core.findings import Finding
from chatbridge.core.types import Route
from chatbridge.pool.lifecycle import PoolLifecycle
from chatbridge.pool.pool import CredentialPool
from chatbridge.pool.refresher import RefreshSettings, TokenRefresher
from chatbridge.pool.signin import SignInPolicy
from chatbridge.pool.sources import TokensFileSource, jwt_credential, read_tokens_file
from chatbridge.providers.http import HttpSettings
from chatbridge.providers.k2think.checks import EXAMPLE_ENV, k2think_findings
from chatbridge.providers.k2think.login import K2ThinkAuthenticator
from chatbridge.providers.k2think.payload import K2ThinkEndpoints
from chatbridge.providers.k2think.provider import ALIASES, PUBLIC_MODELS, K2ThinkConfig, K2ThinkProvider
from chatbridge.providers.k2think.settings import K2ThinkSettings
from chatbridge.providers.wiring import AccountSignIn, ProviderPlugin, ProviderWiring, WiringContext

NAME = "k2think"
_GUEST_HINT = "set K2THINK_TOKEN, TOKENS_FILE, or ACCOUNTS_FILE with ENABLE_TOKEN_AUTO_UPDATE=true for token mode"


def endpoints(section: K2ThinkSettings) -> K2ThinkEndpoints:
    return K2ThinkEndpoints(section.k2think_base_url, section.k2think_chat_url, section.k2think_guest_url,
                            section.k2think_signin_url)


def signin_policy(section: K2ThinkSettings, timeout: float) -> SignInPolicy:
    return SignInPolicy(concurrency=section.signin_concurrency, attempts=section.signin_attempts,
                        backoff=section.signin_retry_backoff, timeout=timeout)


def make_credential(token: str, source: str, account: str | None = None) -> Credential:
    return jwt_credential(NAME, token, source, account)


def credentials(section: K2ThinkSettings, data_dir: Path) -> tuple[list[Credential], list[str]]:
    """Tokens from K2THINK_TOKEN and the tokens file, plus notes on what was found."""
    found: list[Credential] = []
    notes: list[str] = []
    if section.token is not None:
        found.append(make_credential(section.token, "env"))
    path = section.tokens_path(data_dir)
    if path is not None:
        if path.exists():
            tokens = read_tokens_file(path)
            found += [make_credential(t, "tokens_file") for t in tokens]
            notes.append(f"{len(tokens)} token(s) from {path}")
        else:
            notes.append(f"tokens file {path} does not exist yet")
    if section.auto_update:
        notes.append(f"refreshed from {section.accounts_file} every {section.token_update_interval:g} s")
    elif section.accounts_file is not None:
        notes.append(f"{section.accounts_file} is not signed in: ENABLE_TOKEN_AUTO_UPDATE=false "
                     "(set it to true, or run `chatbridge accounts login`)")
    elif section.enable_token_auto_update:
        notes.append("ENABLE_TOKEN_AUTO_UPDATE=true does nothing without ACCOUNTS_FILE")
    unique = {c.id: c for c in found}
    return list(unique.values()), notes


class K2ThinkPlugin(ProviderPlugin):
    name = NAME
    settings_class = K2ThinkSettings
    example_env = EXAMPLE_ENV

    def disabled_reason(self, section: K2ThinkSettings) -> str | None:
        return None if section.k2think_enabled else "disabled (K2THINK_ENABLED=false)"

    def build(self, section: K2ThinkSettings, context: WiringContext) -> ProviderWiring:
        found, notes = credentials(section, context.data_dir)
        guest = section.is_guest(context.data_dir)
        provider = K2ThinkProvider(K2ThinkConfig(endpoints(section), section.k2think_upstream_model, guest, context.http))
        upstream = section.k2think_upstream_model

        def routes() -> list[Route]:
            return [
                Route(model_id, NAME, upstream, reasoning=not model_id.endswith("-nothink"),
                      listed=model_id in PUBLIC_MODELS, owned_by="MBZUAI")
                for model_id in PUBLIC_MODELS + ALIASES
            ]

        if guest:
            report = f"guest mode, no tokens configured ({_GUEST_HINT})" + "".join(f"; {n}" for n in notes)
            return ProviderWiring(provider, mode="guest", report=report, routes=routes,
                                  no_pool_reason="runs in guest mode (no K2THINK_TOKEN, no TOKENS_FILE, and no "
                                                 "ACCOUNTS_FILE with ENABLE_TOKEN_AUTO_UPDATE=true)")
        pool = context.pool.pool(NAME, found)
        wiring = ProviderWiring(provider, mode="token", routes=routes, pool=pool,
                                report=f"token mode, {len(found)} credential(s) ({', '.join(notes) or 'K2THINK_TOKEN'})",
                                no_refresh_reason="set ENABLE_TOKEN_AUTO_UPDATE=true and ACCOUNTS_FILE")
        wiring.lifecycle = self._lifecycle(section, context, pool, wiring)
        return wiring

    def _lifecycle(self, section: K2ThinkSettings, context: WiringContext, pool: CredentialPool,
                   wiring: ProviderWiring) -> PoolLifecycle:
        """Tokens file, hot reload, persisted health and (with auto update) sign-in from the accounts file."""
        path = section.tokens_path(context.data_dir)
        static = [e.credential for e in pool.entries if e.credential.source == "env"]
        settings = context.lifecycle_settings()
        factory = None
        if section.auto_update and path is not None:
            assert section.accounts_file is not None
            authenticate = K2ThinkAuthenticator(endpoints(section), context.http)
            wiring.closers.append(authenticate)
            refresh = RefreshSettings(
                accounts_file=section.accounts_file, tokens_file=path, interval=section.token_update_interval,
                min_interval=context.pool.refresh_min_interval,
                policy=signin_policy(section, context.http.request_timeout),
            )

            def factory(lifecycle: PoolLifecycle) -> TokenRefresher:
                return TokenRefresher(refresh, authenticate, lifecycle.known_tokens, lifecycle.after_refresh)

        return PoolLifecycle(pool, TokensFileSource(path, make_credential, static), settings=settings,
                             store=context.store, refresher_factory=factory)

    def checks(self, section: K2ThinkSettings, data_dir: Path) -> Sequence[Finding]:
        return k2think_findings(section, data_dir)

    base_url_setting = "k2think_base_url"

    def account_signin(self, section: K2ThinkSettings, http: HttpSettings) -> AccountSignIn:
        authenticate = K2ThinkAuthenticator(endpoints(section), http)
        return AccountSignIn(authenticate, signin_policy(section, http.request_timeout), authenticate)

PLUGIN = K2ThinkPlugin()
