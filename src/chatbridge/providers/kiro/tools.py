"""Tools as Kiro accepts them: names it allows (mapped back in answers) and JSON schemas it does not refuse.

Kiro answers "Improperly formed request" for tool names over 64 characters (or with characters
outside `[A-Za-z0-9_-]`), for `anyOf`/`oneOf` in a schema, and for keywords it does not know;
clients (MCP servers, pydantic models) send all of those. Names are shortened with a hash, so
the mapping is stable across requests; schemas are rewritten into the plain subset.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

MAX_NAME = 64
MAX_DESCRIPTION = 10_000
_NAME_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# Keywords kept, per kind of value; everything else (`$schema`, `additionalProperties`,
# `examples`, `default`, `if`/`then`, ...) is dropped.
_KEPT = frozenset({
    "type", "description", "title", "enum", "format", "pattern", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems",
})
_MAX_DEPTH = 24
_MAX_NODES = 20_000  # refs inlined into a DAG can multiply; a schema past this is cut (a DoS guard)
_EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def upstream_name(name: str) -> str:
    """`name` if Kiro accepts it, else a safe prefix plus 8 hex of its hash (64 characters at most)."""
    if _NAME_OK.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', name)[:MAX_NAME - 9]}_{digest}"


class ToolNames:
    """Client names ↔ the names Kiro is sent, for one request (tools offered and tools in its history)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._to_client: dict[str, str] = {}
        for name in names:
            self.upstream(name)

    def upstream(self, name: str) -> str:
        short = upstream_name(name)
        self._to_client.setdefault(short, name)
        return short

    def client(self, upstream: str) -> str:
        """The client's own name for what Kiro called `upstream` (unchanged when it never was mapped)."""
        return self._to_client.get(upstream, upstream)


def tool_description(name: str, description: str) -> str:
    """Non-empty and at most 10,000 characters, as Kiro requires."""
    text = description.strip() or f"Tool: {name}"
    return text if len(text) <= MAX_DESCRIPTION else text[:MAX_DESCRIPTION - 1] + "…"


def sanitize_schema(schema: object) -> dict[str, Any]:
    """A tool's parameters in the subset Kiro takes: an object schema, refs inlined, unions flattened."""
    if not isinstance(schema, dict) or not schema:
        return dict(_EMPTY_OBJECT)
    cleaned = _clean(schema, _Walk(schema), 0, frozenset())
    if cleaned.get("type") != "object":
        cleaned = {"type": "object", "properties": cleaned.get("properties", {}), **_only(cleaned, ("description",))}
    cleaned.setdefault("properties", {})
    return cleaned


class _Walk:
    """One schema's walk: the root refs point into, and how many nodes may still be written."""

    __slots__ = ("budget", "root")

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.budget = _MAX_NODES


def _clean(node: object, walk: _Walk, depth: int, refs: frozenset[str]) -> dict[str, Any]:
    walk.budget -= 1
    if not isinstance(node, dict) or depth > _MAX_DEPTH or walk.budget < 0:
        return {}
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = _resolve(walk.root, ref)
        if target is None or ref in refs:  # unknown or recursive: an open object stands in
            return {"type": "object", **_only(node, ("description",))}
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _clean(merged, walk, depth + 1, refs | {ref})
    union = node.get("anyOf", node.get("oneOf"))
    if isinstance(union, list):
        return _flatten(node, [v for v in union if not _is_null(v)], walk, depth, refs)
    every = node.get("allOf")
    if isinstance(every, list):
        parts = [_clean(v, walk, depth + 1, refs) for v in every]
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return _merge([_clean(rest, walk, depth + 1, refs), *parts])
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _KEPT and value is not None:
            out[key] = value
    _clean_type(out)
    if "const" in node and node["const"] is not None:
        out["enum"] = [node["const"]]
    enum = out.pop("enum", None)
    if isinstance(enum, list) and (values := [v for v in enum if v is not None]):
        out["enum"] = values
    for text in ("description", "title"):
        if not isinstance(out.get(text, ""), str):
            out.pop(text)
    properties = node.get("properties")
    if isinstance(properties, dict):
        out["properties"] = {str(k): _clean(v, walk, depth + 1, refs) for k, v in properties.items()}
        out.setdefault("type", "object")
        required = node.get("required")
        if isinstance(required, list):
            kept = [r for r in required if isinstance(r, str) and r in out["properties"]]
            if kept:
                out["required"] = kept
    items = node.get("items")
    if isinstance(items, list):
        items = items[0] if items else None
    if isinstance(items, dict):
        out["items"] = _clean(items, walk, depth + 1, refs)
        out.setdefault("type", "array")
    return out


def _flatten(node: dict[str, Any], variants: list[Any], walk: _Walk, depth: int,
             refs: frozenset[str]) -> dict[str, Any]:
    """One schema for a union: objects merged into one (properties of all, required of all), else the first."""
    rest = _clean({k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}, walk, depth + 1, refs)
    cleaned = [c for c in (_clean(v, walk, depth + 1, refs) for v in variants) if c]
    if not cleaned:
        return rest
    if len(cleaned) > 1 and all(c.get("type") == "object" for c in cleaned):
        merged = _merge(cleaned)
        common = set.intersection(*(set(c.get("required", ())) for c in cleaned))
        merged.pop("required", None)
        if common:
            merged["required"] = [r for r in merged["properties"] if r in common]
        return _merge([rest, merged])
    return _merge([rest, cleaned[0]])


def _merge(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for schema in schemas:
        for key, value in schema.items():
            if key == "properties":
                out.setdefault("properties", {}).update(value)
            elif key == "required":
                out["required"] = list(dict.fromkeys([*out.get("required", ()), *value]))
            else:
                out.setdefault(key, value)
    return out


def _clean_type(out: dict[str, Any]) -> None:
    kind = out.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str) and k != "null"]
        if kinds:
            out["type"] = kinds[0]
        else:
            out.pop("type")
    elif kind is not None and not isinstance(kind, str):
        out.pop("type")


def _is_null(variant: object) -> bool:
    return isinstance(variant, dict) and variant.get("type") == "null"


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any] | None:
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, dict) else None


def _only(node: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: node[k] for k in keys if isinstance(node.get(k), str)}


def clean_input(value: Any) -> Any:
    """A tool call's input for history: an object, without `""` keys (Kiro refuses them)."""
    if isinstance(value, dict):
        return {k: clean_input(v) for k, v in value.items() if k != ""}
    if isinstance(value, list):
        return [clean_input(v) for v in value]
    return value
