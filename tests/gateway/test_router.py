"""Model aliases: exact names, globs most specific first, a fallback, targets by id or provider."""

from __future__ import annotations

import pytest

from chatbridge.config import parse_model_map
from chatbridge.core.errors import ModelNotFound
from chatbridge.core.types import Route
from chatbridge.gateway.router import Router

ROUTES = [Route("k2", "k2think", "K2-up"), Route("k2-hidden", "k2think", "K2-up", listed=False),
          Route("kimi-k2", "kimi", "kimi-up"), Route("fake", "openai", "fake")]


def router(spec: str, fallback: str | None = None) -> Router:
    return Router(ROUTES, parse_model_map(spec), ("claude*", fallback) if fallback else None)


def test_exact_then_globs_by_specificity_then_fallback() -> None:
    r = router("claude-*=fake, claude-*haiku*=kimi, claude-3-5-haiku-latest=k2", fallback="k2")
    assert r.resolve("claude-3-5-haiku-latest").public_id == "k2"  # exact beats every glob
    assert r.resolve("claude-haiku-4-5").public_id == "kimi-k2"  # the provider's first listed model
    assert r.resolve("Claude-Sonnet-4-5").public_id == "fake"  # the less specific glob, case-blind
    assert router("", fallback="k2").resolve("claude-opus-4-1").public_id == "k2"
    assert router("*haiku*=kimi", fallback="k2").resolve("claude-3-haiku").public_id == "kimi-k2"  # the map beats the fallback
    assert r.resolve("fake").public_id == "fake"  # real ids are never shadowed


def test_unknown_and_unserved() -> None:
    r = router("claude-x=nowhere")
    with pytest.raises(ModelNotFound) as caught:
        r.resolve("claude-x")
    assert "maps to 'nowhere'" in caught.value.message and caught.value.status == 404
    with pytest.raises(ModelNotFound):
        r.resolve("gpt-5")  # no fallback configured
    assert r.unserved_targets() == ["nowhere"]


def test_listed_models_include_exact_aliases() -> None:
    r = router("claude-sonnet-4-5=k2, claude-*=fake, claude-bad=nowhere")
    assert [m.id for m in r.models()] == ["k2", "kimi-k2", "fake", "claude-sonnet-4-5"]


def test_map_syntax() -> None:
    assert parse_model_map(" a=b ,, c*=d ") == [("a", "b"), ("c*", "d")]
    with pytest.raises(ValueError, match="not name=model"):
        parse_model_map("a=b,oops")
