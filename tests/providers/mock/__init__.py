"""A provider for tests, built the way docs/architecture.md says to add one: a package and a registry line.

`MockProvider` wraps a scenario function, the way httpx's `MockTransport` wraps a handler:
`(request, credential) -> a sequence of steps`, where an `Event` is yielded, an `Exception`
is raised and a `float` is slept, so pipeline, pool and endpoint tests need no network.
"""

from tests.providers.mock.provider import MockProvider, Scenario, Step

__all__ = ["MockProvider", "Scenario", "Step"]
