"""Usage per client key, model and provider: requests, input and output tokens, errors.

A request's figures are added in memory when it ends (no store call on the hot path) and
written to the store by `flush`, which the keys' background task runs every second and the
admin route runs before it reads. The store's counters are added to (`incr`), so replicas
sharing a store sum into the same figures.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import quote, unquote

from chatbridge.state import StateStore

FIELDS = ("requests", "input_tokens", "output_tokens", "errors")
_PREFIX = "usage:"
UsageKey = tuple[str, str, str]  # key name, provider, model


class UsageRecorder:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._pending: defaultdict[UsageKey, list[int]] = defaultdict(lambda: [0, 0, 0, 0])

    def record(self, name: str, provider: str, model: str, input_tokens: int, output_tokens: int, error: bool) -> None:
        """Add one ended request's figures (in memory: no store call)."""
        figures = self._pending[(name, provider, model)]
        figures[0] += 1
        figures[1] += max(0, input_tokens)
        figures[2] += max(0, output_tokens)
        figures[3] += int(error)

    async def flush(self) -> None:
        """Add what was recorded since the last flush to the store's counters."""
        pending, self._pending = self._pending, defaultdict(lambda: [0, 0, 0, 0])
        for index, ((name, provider, model), figures) in enumerate(pending.items()):
            try:
                for field, amount in zip(FIELDS, figures, strict=True):
                    if amount:
                        await self.store.incr(_key(name, provider, model, field), amount)
                        figures[FIELDS.index(field)] = 0
            except BaseException:
                self._restore(list(pending.items())[index:])  # counted again at the next flush, not lost
                raise

    def _restore(self, rest: list[tuple[UsageKey, list[int]]]) -> None:
        for usage_key, figures in rest:
            mine = self._pending[usage_key]
            for i, amount in enumerate(figures):
                mine[i] += amount

    async def read(self, name: str | None = None) -> list[dict[str, Any]]:
        """The figures in the store, one row per key name, provider and model; only `name`'s if given."""
        prefix = _PREFIX + (quote(name, safe="") + ":" if name is not None else "")
        rows: dict[UsageKey, dict[str, Any]] = {}
        for key in await self.store.keys(prefix):
            parts = key[len(_PREFIX):].split(":")
            if len(parts) != 4 or parts[3] not in FIELDS:
                continue
            value = await self.store.get(key)
            ident = (unquote(parts[0]), unquote(parts[1]), unquote(parts[2]))
            row = rows.setdefault(ident, {"key": ident[0], "provider": ident[1], "model": ident[2],
                                          **dict.fromkeys(FIELDS, 0)})
            row[parts[3]] = value if isinstance(value, int) else 0
        return [rows[k] for k in sorted(rows)]


def _key(name: str, provider: str, model: str, field: str) -> str:
    return f"{_PREFIX}{quote(name, safe='')}:{quote(provider, safe='')}:{quote(model, safe='')}:{field}"
