"""Kimi's models: the four fixed ids, plus those the live catalog (`GetAvailableModels`) offers.

`kimi` is the original tool's id; `-thinking` turns on the thinking option, `-search` the search
tool (`TOOL_TYPE_SEARCH`). Catalog entries (`availableModels[]`: `displayName`, `scenario`,
`thinking`, `model`) become `kimi-<version>` ids (`kimi-k2.6`, `kimi-k2.6-thinking`, each with a
`-search` twin), as the public proxies name them; agent entries (`kimiPlusId`, `agentMode`)
answer with tool blocks of their own and are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from chatbridge.providers.kimi.protocol import DEFAULT_SCENARIO


@dataclass(frozen=True, slots=True)
class KimiModel:
    id: str
    scenario: str
    thinking: bool = False
    search: bool = False
    upstream: str | None = None  # the catalog's model id (`options.model`), when it names one
    listed: bool = True

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"scenario": self.scenario, "thinking": self.thinking, "search": self.search}
        if self.upstream:
            options["model"] = self.upstream
        return options


def static_models(scenario: str = DEFAULT_SCENARIO) -> list[KimiModel]:
    return [
        KimiModel("kimi", scenario),
        KimiModel("kimi-thinking", scenario, thinking=True),
        KimiModel("kimi-search", scenario, search=True),
        KimiModel("kimi-thinking-search", scenario, thinking=True, search=True),
    ]


def parse_catalog(data: Any) -> tuple[list[KimiModel], str]:
    """The catalog's models and its default scenario; ([], default) for an answer of another shape."""
    if not isinstance(data, dict):
        return [], DEFAULT_SCENARIO
    default = data.get("defaultScenario")
    scenario = default if isinstance(default, str) and default.startswith("SCENARIO_") else DEFAULT_SCENARIO
    entries = data.get("availableModels") or data.get("models")
    found: dict[str, KimiModel] = {}
    for entry in entries if isinstance(entries, list) else []:
        for model in _models_of(entry, scenario):
            found.setdefault(model.id, model)
    return list(found.values()), scenario


def _models_of(entry: object, default: str) -> list[KimiModel]:
    if not isinstance(entry, dict) or entry.get("kimiPlusId") or entry.get("agentMode") not in (None, "", "TYPE_NONE"):
        return []
    name = next((entry[k] for k in ("displayName", "name", "model") if isinstance(entry.get(k), str) and entry[k]), "")
    slug = _slug(name)
    if not slug:
        return []
    scenario = entry["scenario"] if isinstance(entry.get("scenario"), str) and entry["scenario"] else default
    thinking = entry.get("thinking") is True
    upstream = entry.get("model") if isinstance(entry.get("model"), str) and entry.get("model") else None
    base = f"kimi-{slug}" + ("-thinking" if thinking and not slug.endswith("thinking") else "")
    return [KimiModel(base, scenario, thinking, False, upstream), KimiModel(base + "-search", scenario, thinking, True, upstream)]


def _slug(name: str) -> str:
    """`K2.6` → `k2.6`, `Kimi K2.6 Thinking` → `k2.6`; another name → its lower-case words joined by `-`."""
    version = re.search(r"\bk\d+(?:\.\d+)*\b", name, re.IGNORECASE)
    if version:
        return version.group(0).lower()
    words = re.findall(r"[a-z0-9.]+", name.lower())
    return "-".join(w for w in words if w != "kimi")[:40]
