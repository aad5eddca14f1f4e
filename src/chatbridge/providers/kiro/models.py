"""Kiro's models: a static list, the live catalog when it answers, every spelling clients use, and effort.

Clients name models the Anthropic way (`claude-sonnet-4-5-20250929`, `claude-3-7-sonnet-latest`),
Kiro the dotted way (`claude-sonnet-4.5`, `claude-3.7-sonnet`); one rule (`dotted`: the minor
version after a dot, no date, no `-latest`) ties every spelling of any Claude id, listed or
read from the catalog, to the id Kiro takes. Which `output_config.effort` values a model takes
comes from the catalog's schema when it lists one; otherwise from the rule the protocol notes
give: models before 4.6 refuse the field (400). Context windows likewise: the catalog's
`tokenLimits`, else 1 M for Sonnet and Opus from 4.6 on and 200 k for the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from chatbridge.core.types import ChatRequest

EFFORT_ORDER = ("low", "medium", "high", "xhigh", "max")
DEFAULT_WINDOW = 200_000
LARGE_WINDOW = 1_000_000  # Sonnet and Opus 4.6 and later (the notes' §4.7, after KR)
# `claude-<family>-<major>[.-<minor>]` (4.x) or `claude-<major>[.-<minor>]-<family>` (3.x), then a date or `-latest`.
_FAMILY = re.compile(r"^claude-(?:(?P<family>opus|sonnet|haiku)-(?P<major>\d+)(?:[.-](?P<minor>\d))?"
                     r"|(?P<major3>\d+)(?:[.-](?P<minor3>\d))?-(?P<family3>opus|sonnet|haiku))"
                     r"(?:-(?P<date>\d{8}))?(?:-latest)?$")


@dataclass(frozen=True, slots=True)
class KiroModel:
    """An upstream model id, its context window and the effort values it takes (none: leave it out)."""

    id: str
    window: int = DEFAULT_WINDOW
    efforts: tuple[str, ...] = ()


# Listed in this order: the original tool's id first, then Kiro's ids as the protocol notes give them
# (table 3.8, the 2026 update's newer Claude ids, and JW's fallback list of non-Claude ids).
PUBLIC_IDS: dict[str, str] = {
    "claude-sonnet-4-20250514": "claude-sonnet-4",
    "claude-sonnet-4": "claude-sonnet-4",
    "claude-sonnet-4.5": "claude-sonnet-4.5",
    "claude-haiku-4.5": "claude-haiku-4.5",
    "claude-opus-4.5": "claude-opus-4.5",
    "auto": "auto",
    "claude-sonnet-4.6": "claude-sonnet-4.6",
    "claude-sonnet-5": "claude-sonnet-5",
    "claude-opus-4.6": "claude-opus-4.6",
    "claude-opus-4.7": "claude-opus-4.7",
    "claude-opus-4.8": "claude-opus-4.8",
    "claude-3.7-sonnet": "claude-3.7-sonnet",
    "deepseek-3.2": "deepseek-3.2",
    "glm-5": "glm-5",
    "minimax-m2.1": "minimax-m2.1",
    "minimax-m2.5": "minimax-m2.5",
    "qwen3-coder-next": "qwen3-coder-next",
}
# Anthropic's release dates, for the dated spellings (from 4.6 on Anthropic's ids carry none).
RELEASE_DATES = {"claude-sonnet-4": "20250514", "claude-sonnet-4.5": "20250929", "claude-haiku-4.5": "20251001",
                 "claude-opus-4.5": "20251101", "claude-3.7-sonnet": "20250219"}
# Older ids clients still send (Claude Code's background model among them), served by the nearest model.
LEGACY_ALIASES = {"claude-3-5-haiku-20241022": "claude-haiku-4.5", "claude-3-5-haiku-latest": "claude-haiku-4.5"}


def static_models() -> dict[str, KiroModel]:
    return {upstream: default_model(upstream) for upstream in dict.fromkeys(PUBLIC_IDS.values())}


def default_model(model_id: str) -> KiroModel:
    """What the rules say of a model the catalog has not described."""
    return KiroModel(model_id, default_window(model_id), default_efforts(model_id))


def _version(model_id: str) -> tuple[str, int, int] | None:
    """(family, major, minor) of a Claude id in any spelling; None for anything else."""
    match = _FAMILY.match(model_id)
    if match is None:
        return None
    family = match.group("family") or match.group("family3")
    major = match.group("major") or match.group("major3")
    minor = match.group("minor") or match.group("minor3")
    return family, int(major), int(minor or 0)


def dotted(name: str) -> str | None:
    """The id Kiro takes for a Claude name in any spelling (JW's rule: the minor version after a dot,
    no date, no `-latest`); None when `name` is not a Claude id of a known shape."""
    version = _version(name)
    if version is None:
        return None
    family, major, minor = version
    match = _FAMILY.match(name)
    assert match is not None
    has_minor = (match.group("minor") or match.group("minor3")) is not None
    number = f"{major}.{minor}" if has_minor else str(major)
    return f"claude-{number}-{family}" if match.group("family3") else f"claude-{family}-{number}"


def default_efforts(model_id: str) -> tuple[str, ...]:
    """Claude 4.6 and later take `output_config.effort`; 4.5 and older refuse it (as does anything unknown)."""
    version = _version(model_id)
    if version is None or version[1:] < (4, 6):
        return ()
    return ("low", "medium", "high", "xhigh", "max") if version[0] == "opus" else ("low", "medium", "high", "max")


def default_window(model_id: str) -> int:
    """1 M tokens for Sonnet and Opus from 4.6 on, 200 k for every other model (the notes' §4.7)."""
    version = _version(model_id)
    if version is not None and version[0] in ("sonnet", "opus") and version[1:] >= (4, 6):
        return LARGE_WINDOW
    return DEFAULT_WINDOW


def aliases(model_id: str) -> list[str]:
    """Other spellings of `model_id` that `dotted` reads back as it: dashed, with Anthropic's release date,
    with `-latest`."""
    spellings = {model_id, model_id.replace(".", "-")}
    date = RELEASE_DATES.get(model_id)
    if date:
        spellings |= {f"{s}-{date}" for s in set(spellings)}
    if _version(model_id) is not None:
        spellings |= {f"{s}-latest" for s in (model_id, model_id.replace(".", "-"))}
    spellings.discard(model_id)
    return sorted(s for s in spellings if dotted(s) == dotted(model_id))


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
            found.append(default_model(entry))
            continue
        if not isinstance(entry, dict):
            continue
        model_id = entry.get("modelId", entry.get("id"))
        if not isinstance(model_id, str) or not model_id.strip():
            continue
        efforts = _schema_efforts(entry.get("additionalModelRequestFieldsSchema"))
        model_id = model_id.strip()
        found.append(KiroModel(model_id, _window(entry, model_id), default_efforts(model_id) if efforts is None else efforts))
    return found


def _window(entry: dict[str, Any], model_id: str) -> int:
    limits = entry.get("tokenLimits")
    for value in (limits.get("maxInputTokens") if isinstance(limits, dict) else None, entry.get("contextWindow")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default_window(model_id)


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
