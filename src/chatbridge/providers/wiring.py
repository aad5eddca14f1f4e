"""How a provider package plugs into the gateway: its settings section in, a wired provider out.

The composition root (`chatbridge.runtime`) loops over the registry and calls each plugin's
`build` with a `WiringContext`: the shared settings every provider may use, never the global
settings object. A plugin returns a `ProviderWiring`: the provider, its credential pool and
the pool's lifecycle (if it has one), its routes, what startup prints, and what to close.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from chatbridge.core.credentials import Credential
from chatbridge.core.findings import Finding
from chatbridge.core.types import ChatRequest, Route
from chatbridge.features.sessions import SessionSettings
from chatbridge.pool.lifecycle import LifecycleSettings, PoolLifecycle
from chatbridge.pool.outage import Backoff
from chatbridge.pool.pool import CredentialPool
from chatbridge.pool.signin import Authenticator, SignInPolicy
from chatbridge.providers.base import Provider
from chatbridge.providers.http import HttpSettings
from chatbridge.providers.settings import ProviderSettings
from chatbridge.state import StateStore


class Closable(Protocol):
    async def aclose(self) -> None: ...


class Planner(Protocol):
    """Builds each request's attempt plan (`gateway.pipeline.AttemptPlan`): e.g. a stateful
    upstream's sessions (`features.sessions.SessionPlanner`)."""

    async def __call__(self, request: ChatRequest, route: Route, provider: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class PoolDefaults:
    """Pool behaviour the core settings set for every provider (MAX_TOKEN_FAILURES, ...)."""

    max_failures: int = 3  # transient failures in a row before a credential rests
    cooldown: float = 60.0  # after a 429 without Retry-After
    backoff: float = 5.0  # the first rest after transient failures (doubling, at most 5 min)
    outage_window: float = 30.0  # every credential failing within it: the upstream is down
    refresh_ahead: float = 600.0  # refresh a credential this long before it expires
    refresh_min_interval: float = 30.0  # between two automatically triggered refreshes
    reload_interval: float = 2.0  # how often credential files are checked for hand edits
    slot_ttl: float = 30.0  # replicas: how long a stream slot in the shared store lives unless renewed


    def pool(self, provider: str, credentials: Iterable[Credential], **options: Any) -> CredentialPool:
        """A credential pool with these health rules (`options`: the provider's own, e.g. `max_streams`)."""
        return CredentialPool(provider, credentials, max_failures=self.max_failures, default_cooldown=self.cooldown,
                              backoff=Backoff(self.backoff), outage_window=self.outage_window, **options)


@dataclass(frozen=True, slots=True)
class WiringContext:
    http: HttpSettings
    pool: PoolDefaults
    store: StateStore
    data_dir: Path
    sessions: SessionSettings = field(default_factory=SessionSettings)  # for stateful providers (SESSION_CACHE_TTL, MAX_SESSION_SIZE)

    def lifecycle_settings(self) -> LifecycleSettings:
        """How a pool's lifecycle runs, from the shared settings."""
        return LifecycleSettings(reload_interval=self.pool.reload_interval, refresh_ahead=self.pool.refresh_ahead,
                                 renew_timeout=self.http.request_timeout, slot_ttl=self.pool.slot_ttl)


@dataclass(slots=True)
class ProviderWiring:
    """A provider ready to serve, and everything that keeps it alive."""

    provider: Provider
    mode: str  # shown in /health and the admin API: "guest", "token", "api_key", ...
    report: str  # the startup line after "<name>: "
    routes: Callable[[], list[Route]]  # called after `astart`, when discovered models are known
    pool: CredentialPool | None = None
    lifecycle: PoolLifecycle | None = None
    closers: list[Closable] = field(default_factory=list)
    no_pool_reason: str = "has no credential pool"  # why, for the admin API when `pool` is None
    no_refresh_reason: str = "its credentials are not refreshed automatically"  # when the lifecycle has no refresher
    planner: Planner | None = None  # per-request attempt plans (sessions); None: every request as it is


@dataclass(frozen=True, slots=True)
class AccountSignIn:
    """Signing accounts in from an accounts file (`chatbridge accounts login`)."""

    authenticate: Authenticator
    policy: SignInPolicy
    close: Closable


class ProviderPlugin(abc.ABC):
    """One provider package's entry point; `providers/registry.py` names them."""

    name: ClassVar[str]
    settings_class: ClassVar[type[ProviderSettings]]
    example_env: ClassVar[str] = ""  # its part of `chatbridge check-config --example`

    @abc.abstractmethod
    def disabled_reason(self, section: Any) -> str | None:
        """None when the provider is enabled by `section`; otherwise what startup says and how to enable it."""

    @abc.abstractmethod
    def build(self, section: Any, context: WiringContext) -> ProviderWiring:
        """Settings section in, a wired provider out; reads files, never the network."""

    def checks(self, section: Any, data_dir: Path) -> Sequence[Finding]:
        """What `chatbridge check-config` says about this provider's settings and files."""
        return ()

    base_url_setting: ClassVar[str | None] = None  # the variable `accounts login --base-url` overrides

    def account_signin(self, section: Any, http: HttpSettings) -> AccountSignIn | None:
        """Sign-in from an accounts file, for providers whose credentials come from one."""
        return None
