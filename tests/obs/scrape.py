"""Reading a `/metrics` scrape the way Prometheus does (prometheus-client's own text parser)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), float(s.value)) for family in text_string_to_metric_families(text)
            for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when none)."""
    return sum(v for n, got, v in samples(text) if n == name and all(got.get(k) == w for k, w in labels.items()))


def label_values(text: str, name: str, label: str) -> set[str]:
    return {got[label] for n, got, _ in samples(text) if n == name and label in got}
