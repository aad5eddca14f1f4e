"""Public model id → `Route` (which provider serves it, as which upstream model).

Besides the providers' own ids, aliases map other names onto them (Claude Code asks for
`claude-*` ids): exact names first, then glob patterns, most specific first (the most literal
characters, as httpx orders its URL patterns), then one fallback pattern. An alias's target is
a served model id, or a provider's name for that provider's first model.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Sequence

from chatbridge.core.errors import ModelNotFound
from chatbridge.core.types import ModelInfo, Route

Alias = tuple[str, str]  # (name or glob pattern, target)
_GLOB = frozenset("*?[")
_RESOLVED_CACHE = 1024  # aliased names remembered; names are client input, so bounded


def is_glob(pattern: str) -> bool:
    return any(ch in _GLOB for ch in pattern)


def _priority(indexed: tuple[int, Alias]) -> tuple[int, int, int]:
    index, (pattern, _) = indexed
    literal = sum(1 for ch in pattern if ch not in _GLOB)
    return (-literal, -len(pattern), index)


class Router:
    """Exact-match lookup; ids are case-sensitive as OpenAI's are, with a case-blind fallback."""

    def __init__(self, routes: Iterable[Route] = (), aliases: Sequence[Alias] = (), fallback: Alias | None = None) -> None:
        self._routes: dict[str, Route] = {}
        self._folded: dict[str, Route] = {}
        self._by_provider: dict[str, Route] = {}
        for route in routes:  # the first provider to claim an id keeps it
            self._routes.setdefault(route.public_id, route)
            self._folded.setdefault(route.public_id.lower(), route)
            if route.listed:
                self._by_provider.setdefault(route.provider, route)
        self._exact = {name.lower(): (name, target) for name, target in aliases if not is_glob(name)}
        globs = [(i, (p.lower(), t)) for i, (p, t) in enumerate(aliases) if is_glob(p)]
        self._globs = [alias for _, alias in sorted(globs, key=_priority)]
        if fallback is not None:
            self._globs.append((fallback[0].lower(), fallback[1]))
        self._aliased: dict[str, Route] = {}

    def resolve(self, model: str) -> Route:
        route = self._routes.get(model) or self._folded.get(model.lower()) or self._aliased.get(model)
        if route is not None:
            return route
        target = self.alias_target(model)
        if target is None:
            raise ModelNotFound(model)
        route = self._target(target)
        if route is None:
            raise ModelNotFound(model, f"it maps to '{target}', which no provider serves")
        if len(self._aliased) < _RESOLVED_CACHE:
            self._aliased[model] = route
        return route

    def alias_target(self, model: str) -> str | None:
        """What an alias maps `model` to (None if none does)."""
        folded = model.lower()
        exact = self._exact.get(folded)
        if exact is not None:
            return exact[1]
        for pattern, target in self._globs:
            if fnmatch.fnmatchcase(folded, pattern):
                return target
        return None

    def unserved_targets(self) -> list[str]:
        """Alias targets no provider serves (a typo in the map, or a provider that is off)."""
        targets = [t for _, t in self._exact.values()] + [t for _, t in self._globs]
        return sorted({t for t in targets if self._target(t) is None})

    def _target(self, target: str) -> Route | None:
        return self._routes.get(target) or self._folded.get(target.lower()) or self._by_provider.get(target)

    def models(self) -> list[ModelInfo]:
        """Every listed id, then exact aliases that land on a served model."""
        listed = [ModelInfo(id=r.public_id, owned_by=r.owned_by or r.provider) for r in self._routes.values() if r.listed]
        known = {m.id.lower() for m in listed}
        for folded, (name, target) in self._exact.items():
            route = self._target(target)
            if route is not None and folded not in known:
                listed.append(ModelInfo(id=name, owned_by=route.owned_by or route.provider))
                known.add(folded)
        return listed

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())
