"""Public model id → `Route` (which provider serves it, as which upstream model)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from chatbridge.core.errors import ModelNotFound
from chatbridge.core.types import ModelInfo, Route


class Router:
    """Exact-match lookup; ids are case-sensitive as OpenAI's are, with a case-blind fallback."""

    def __init__(self, routes: Iterable[Route] = (), missing_hint: Callable[[], str | None] | None = None) -> None:
        # Why a model may be missing now (a model list not read yet), for the 404's message.
        self._missing_hint = missing_hint
        self._routes: dict[str, Route] = {}
        self._folded: dict[str, Route] = {}
        for route in routes:  # the first provider to claim an id keeps it
            self._routes.setdefault(route.public_id, route)
            self._folded.setdefault(route.public_id.lower(), route)

    def resolve(self, model: str) -> Route:
        route = self._routes.get(model) or self._folded.get(model.lower())
        if route is None:
            raise ModelNotFound(model, self._missing_hint() if self._missing_hint is not None else None)
        return route

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=r.public_id, owned_by=r.owned_by or r.provider) for r in self._routes.values() if r.listed]

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())
