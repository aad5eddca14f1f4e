"""Public model id → (provider, upstream model, answer options)."""

from __future__ import annotations

from dataclasses import dataclass

from chatbridge.core.errors import ModelNotFound
from chatbridge.core.types import ModelInfo
from chatbridge.providers.base import Provider


@dataclass(frozen=True, slots=True)
class Route:
    public_id: str
    provider: Provider
    upstream_model: str
    thinking: bool = True  # False for `-nothink` variants
    listed: bool = True  # aliases resolve but are not listed twice
    owned_by: str = ""
    untagged_start: str = "answer"  # what untagged leading text is, see features.thinking


class Router:
    """Exact-match lookup; ids are case-sensitive as OpenAI's are, with a case-blind fallback."""

    def __init__(self, routes: list[Route]) -> None:
        self._routes = {route.public_id: route for route in routes}
        self._folded = {route.public_id.lower(): route for route in routes}

    def resolve(self, model: str) -> Route:
        route = self._routes.get(model) or self._folded.get(model.lower())
        if route is None:
            raise ModelNotFound(model)
        return route

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(id=r.public_id, owned_by=r.owned_by or r.provider.name)
            for r in self._routes.values()
            if r.listed
        ]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._routes.values())
