"""References inside a client's schema: only local ones, each resolving, none looping in place.

jsonschema's default registry fetches any `$ref` URL with a blocking, timeout-less `urlopen`
(on the event loop, it froze `/health`), and a reference to nowhere raised at validation time
(a 500). Here a schema may only point into itself (`#/…` or `#anchor`), every reference must
resolve when the schema is offered, and nothing is ever retrieved.

A reference loop that never descends into the instance (`a` → `allOf: [b]`, `b` → `$ref: a`)
would make validation recurse until Python gives up, so it is refused too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import referencing.jsonschema
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable

_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# Keywords that apply their subschemas to the same instance, not to a part of it.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas", "dependencies")


_END = object()


class NotRetrieved(LookupError):
    """A reference that would need something outside the schema."""


def refuse_retrieval(uri: str) -> Resource[Any]:
    """The registry's `retrieve`: nothing outside the schema is ever fetched."""
    raise NotRetrieved(f"{uri!r} is outside the schema")


def subschemas(schema: Any, dialect: str) -> Iterator[tuple[Any, Any]]:
    """Every subschema of `schema` (per the dialect's keywords), with the resolver in scope there."""
    spec = referencing.jsonschema.specification_with(dialect, default=referencing.jsonschema.DRAFT202012)
    root = spec.create_resource(schema)
    registry: Registry[Any] = Registry(retrieve=refuse_retrieval).with_resource(root.id() or "", root).crawl()  # type: ignore[call-arg]
    stack = [(root, registry.resolver(root.id() or ""))]
    while stack:
        resource, resolver = stack.pop()
        yield resource.contents, resolver
        stack.extend((sub, resolver.in_subresource(sub)) for sub in resource.subresources())


def reference_problem(schema: Any, dialect: str) -> str | None:
    """Why the references in `schema` cannot be used, or None."""
    in_place: dict[int, list[Any]] = {}
    for contents, resolver in subschemas(schema, dialect):
        if not isinstance(contents, dict):
            continue
        targets: list[Any] = []
        for keyword in _REF_KEYWORDS:
            ref = contents.get(keyword)
            if not isinstance(ref, str):
                continue
            if not ref.startswith("#"):
                return f"{keyword} {ref!r} points outside the schema; only local references ('#/...') are allowed"
            try:
                targets.append(resolver.lookup(ref).contents)
            except Unresolvable:
                return f"{keyword} {ref!r} does not resolve to anything in the schema"
        in_place[id(contents)] = [*targets, *_in_place_children(contents)]
    if _has_loop(in_place):
        return "its references loop back on themselves without descending into the value"
    return None


def _in_place_children(contents: dict[str, Any]) -> Iterator[Any]:
    for keyword in _IN_PLACE_ONE:
        if keyword in contents:
            yield contents[keyword]
    for keyword in _IN_PLACE_MANY:
        value = contents.get(keyword)
        if isinstance(value, list):
            yield from value
    for keyword in _IN_PLACE_MAP:
        value = contents.get(keyword)
        if isinstance(value, dict):
            yield from (v for v in value.values() if isinstance(v, dict))


def _has_loop(in_place: dict[int, list[Any]]) -> bool:
    """A cycle in the graph of subschemas applied to the same instance (iterative DFS)."""
    done: set[int] = set()
    for start in in_place:
        if start in done:
            continue
        path: set[int] = {start}
        stack: list[tuple[int, Iterator[Any]]] = [(start, iter(in_place[start]))]
        while stack:
            node, children = stack[-1]
            child = next(children, _END)
            if child is _END:
                stack.pop()
                path.discard(node)
                done.add(node)
                continue
            key = id(child)
            if key in path:
                return True
            if key in done or key not in in_place:
                continue
            path.add(key)
            stack.append((key, iter(in_place[key])))
    return False
