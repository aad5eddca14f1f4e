"""Which providers exist: a name → `"module:attribute"` of its plugin, imported only when needed.

Adding a provider is a package under `providers/` and one line here (see docs/architecture.md).
Tests register their own (a class or an instance is accepted too), the way uvicorn's
`HTTP_PROTOCOLS` accepts an import string or a class.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatbridge.providers.wiring import ProviderPlugin

# Order matters where two providers serve the same id: the first enabled one keeps it (the official
# K2-Think API, when its key is set, before the K2Think web chat).
PROVIDERS: dict[str, Any] = {
    "k2think-api": "chatbridge.providers.k2think.official_api:PLUGIN",
    "k2think": "chatbridge.providers.k2think.wiring:PLUGIN",
    "kimi": "chatbridge.providers.kimi.wiring:PLUGIN",
    "openai": "chatbridge.providers.openai_compat.wiring:PLUGIN",
    "kiro": "chatbridge.providers.kiro.wiring:PLUGIN",
}

# The provider whose pool the original tool's `/admin/tokens/*` routes and `chatbridge accounts` address.
TOKENS_PROVIDER = "k2think"

_loaded: dict[str, ProviderPlugin] = {}


class ProviderImportError(ImportError):
    """A registered provider's plugin cannot be imported; names the provider and the extra to install."""


def register(name: str, plugin: Any) -> None:
    """Add (or replace) a provider: an import string, a plugin class or a plugin instance."""
    PROVIDERS[name] = plugin
    _loaded.pop(name, None)


def unregister(name: str) -> None:
    PROVIDERS.pop(name, None)
    _loaded.pop(name, None)


def names() -> list[str]:
    return list(PROVIDERS)


def plugin(name: str) -> ProviderPlugin:
    """The plugin registered as `name`, imported on first use."""
    if name not in _loaded:
        _loaded[name] = _resolve(name, PROVIDERS[name])
    return _loaded[name]


def plugins() -> list[ProviderPlugin]:
    return [plugin(name) for name in PROVIDERS]


def _resolve(name: str, target: Any) -> ProviderPlugin:
    if isinstance(target, str):
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ProviderImportError(
                f"provider {name!r} cannot be imported ({exc}); install its extra: pip install 'chatbridge[{name}]'"
            ) from exc
        target = getattr(module, attribute)
    if isinstance(target, type):
        target = target()
    return target  # type: ignore[no-any-return]
