"""Anthropic `cache_control` markers: forwarded to an OpenAI-compatible upstream that caches by them
(OPENAI_COMPAT_CACHE_CONTROL=true), never sent to one that was not said to take them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import GatewayServer
from tests.upstreams import OpenAICompatEmulator

EPHEMERAL = {"type": "ephemeral"}
TOOL = {"name": "get_weather", "description": "Weather", "cache_control": EPHEMERAL,
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def _upstream_body(gw: GatewayServer, emulator: OpenAICompatEmulator) -> dict[str, Any]:
    """What the upstream got for a request with markers on the system prompt, a text part and a tool."""
    gw.anthropic().messages.create(
        model="fake-model", max_tokens=64, tools=[TOOL],  # type: ignore[list-item]
        system=[{"type": "text", "text": "You are terse.", "cache_control": EPHEMERAL}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Long document…", "cache_control": EPHEMERAL},
                                                {"type": "text", "text": "Summarise it."}]}])
    body: dict[str, Any] = [r for r in emulator.requests if r.path.endswith("/chat/completions")][-1].json
    return body


@pytest.mark.parametrize("forward", [True, False])
def test_cache_markers_reach_the_upstream_only_when_it_takes_them(
        forward: bool, compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                       k2think_enabled=False, openai_compat_cache_control=forward)
    body = _upstream_body(gw, compat_emu)
    system, user = body["messages"]
    marked = [system["content"][0], user["content"][0], body["tools"][0]]
    if forward:
        assert all(part["cache_control"] == EPHEMERAL for part in marked)
        assert "cache_control" not in user["content"][1]  # only where the client put one
    else:
        assert not any("cache_control" in part for part in marked)
    assert user["content"][0]["text"] == "Long document…" and system["content"][0]["text"] == "You are terse."
