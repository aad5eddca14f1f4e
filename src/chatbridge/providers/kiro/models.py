"""Kiro's models: a static list, the live catalog when it answers, every spelling clients use, and effort.

Clients name models the Anthropic way (`claude-sonnet-4-5-20250929`), Kiro the dotted way
(`claude-sonnet-4.5`); both, with or without the date, reach the same upstream id. Which
`output_config.effort` values a model takes comes from the catalog's schema when it lists one;
otherwise from the rule the protocol notes give: models before 4.6 refuse the field (400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from chatbridge.core.types import ChatRequest

EFFORT_ORDER = ("low", "medium", "high", "xhigh", "max")
DEFAULT_WINDOW = 200_000
_FAMILY = re.compile(r"^claude-(opus|sonnet|haiku)-(\d+)(?:[.-](\d))?(?:-(\d{8}))?(?:-latest)?$")


@dataclass(frozen=True, slots=True)
class KiroModel:
    """An upstream model id, its context window and the effort values it takes (none: leave it out)."""

    id: str
    window: int = DEFAULT_WINDOW
    efforts: tuple[str, ...] = ()


# The original tool's id first; dates are Anthropic's, for the dated aliases.
PUBLIC_IDS: dict[str, str] = {
    "claude-sonnet-4-20250514": "claude-sonnet-4",
    "claude-sonnet-4": "claude-sonnet-4",
    "claude-sonnet-4.5": "claude-sonnet-4.5",
    "claude-haiku-4.5": "claude-haiku-4.5",
    "claude-opus-4.5": "claude-opus-4.5",
    "auto": "auto",
}
RELEASE_DATES = {"claude-sonnet-4": "20250514", "claude-sonnet-4.5": "20250929", "claude-haiku-4.5": "20251001",
                 "claude-opus-4.5": "20251101"}
# Older ids clients still send (Claude Code's background model among them), served by the nearest model.
LEGACY_ALIASES = {"claude-3-5-haiku-20241022": "claude-haiku-4.5", "claude-3-5-haiku-latest": "claude-haiku-4.5"}


def static_models() -> dict[str, KiroModel]:
    return {upstream: KiroModel(upstream, efforts=default_efforts(upstream)) for upstream in dict.fromkeys(PUBLIC_IDS.values())}


def default_efforts(model_id: str) -> tuple[str, ...]:
    """Claude 4.6 and later take `output_config.effort`; 4.5 and older refuse it (as does anything unknown)."""
    match = _FAMILY.match(model_id)
    if match is None:
        return ()
    family, major, minor = match.group(1), int(match.group(2)), int(match.group(3) or 0)
    if (major, minor) < (4, 6):
        return ()
    return ("low", "medium", "high", "xhigh", "max") if family == "opus" else ("low", "medium", "high", "max")


def aliases(model_id: str) -> list[str]:
    """Other spellings of `model_id`: dashed for dotted, with Anthropic's release date, with `-latest`."""
    spellings = {model_id, model_id.replace(".", "-")}
    date = RELEASE_DATES.get(model_id)
    if date:
        spellings |= {f"{s}-{date}" for s in set(spellings)}
    if _FAMILY.match(model_id):
        spellings |= {f"{s}-latest" for s in (model_id, model_id.replace(".", "-"))}
    spellings.discard(model_id)
    return sorted(spellings)


def requested_effort(request: ChatRequest) -> str | None:
    """The effort a request asks for: Anthropic's `output_config.effort`, OpenAI's `reasoning_effort`,
    or a thinking budget read as an effort (adaptive thinking leaves it to the model)."""
    if request.effort:
        return request.effort
    if request.reasoning_effort:
        return request.reasoning_effort
    thinking = request.thinking
    if thinking is None or thinking.type != "enabled" or thinking.budget_tokens is None:
        return None
    return "low" if thinking.budget_tokens <= 4096 else "medium" if thinking.budget_tokens <= 16384 else "high"


def effort_for(requested: str | None, allowed: tuple[str, ...]) -> str | None:
    """The effort to send: the request's when allowed, else the nearest allowed below it; None to leave it out."""
    if not requested or not allowed:
        return None
    value = {"minimal": "low", "none": None}.get(requested.lower(), requested.lower())
    if value is None or value not in EFFORT_ORDER:
        return None
    if value in allowed:
        return value
    rank = EFFORT_ORDER.index(value)
    below = [e for e in allowed if e in EFFORT_ORDER and EFFORT_ORDER.index(e) <= rank]
    return max(below, key=EFFORT_ORDER.index) if below else min(allowed, key=lambda e: EFFORT_ORDER.index(e) if e in EFFORT_ORDER else 0)


def parse_catalog(answer: Any) -> list[KiroModel]:
    """`ListAvailableModels`: `models[]` of `{modelId, tokenLimits?, additionalModelRequestFieldsSchema?}`."""
    entries = answer.get("models", answer.get("availableModels")) if isinstance(answer, dict) else answer
    if not isinstance(entries, list):
        return []
    found: list[KiroModel] = []
    for entry in entries:
        if isinstance(entry, str):
            found.append(KiroModel(entry, efforts=default_efforts(entry)))
            continue
        if not isinstance(entry, dict):
            continue
        model_id = entry.get("modelId", entry.get("id"))
        if not isinstance(model_id, str) or not model_id.strip():
            continue
        efforts = _schema_efforts(entry.get("additionalModelRequestFieldsSchema"))
        found.append(KiroModel(model_id.strip(), _window(entry), default_efforts(model_id) if efforts is None else efforts))
    return found


def _window(entry: dict[str, Any]) -> int:
    limits = entry.get("tokenLimits")
    for value in (limits.get("maxInputTokens") if isinstance(limits, dict) else None, entry.get("contextWindow")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_WINDOW


def _schema_efforts(schema: Any) -> tuple[str, ...] | None:
    """The enum of `properties.output_config.properties.effort` (None when the catalog does not say)."""
    if isinstance(schema, str):
        try:
            schema = orjson.loads(schema)
        except orjson.JSONDecodeError:
            return None
    node: Any = schema
    for key in ("properties", "output_config", "properties", "effort", "enum"):
        if not isinstance(node, dict):
            return () if schema is not None else None
        node = node.get(key)
    if isinstance(node, list):
        return tuple(v for v in node if isinstance(v, str))
    return () if isinstance(schema, dict) else None
