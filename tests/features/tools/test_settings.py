"""Settings, the emulation switch and the package's public names."""

from __future__ import annotations

import pytest

import chatbridge.features.tools as tools
from chatbridge.core.types import Message, ToolCall
from chatbridge.features.tools import ToolSettings, needs_emulation
from tests.features.tools.helpers import make_request


def test_needs_emulation() -> None:
    on, off = ToolSettings(), ToolSettings(enabled=False)
    assert needs_emulation(make_request(), on)
    assert not needs_emulation(make_request(), off)
    assert not needs_emulation(make_request(tools=[]), on)
    result = [Message(role="tool", tool_call_id="c", content="x")]
    assert needs_emulation(make_request(tools=[], messages=result), on)
    call = [Message(role="assistant", tool_calls=[ToolCall("c", "f", "{}")])]
    assert needs_emulation(make_request(tools=[], messages=call), on)


def test_settings_from_env() -> None:
    assert ToolSettings.from_env({}) == ToolSettings()
    env = {"ENABLE_TOOLIFY": "false", "TOOLIFY_CUSTOM_PROMPT": "P {tool_list}", "TOOL_REPAIR_ATTEMPTS": "2"}
    assert ToolSettings.from_env(env) == ToolSettings(enabled=False, custom_prompt="P {tool_list}", repair_attempts=2)
    with pytest.raises(ValueError):
        ToolSettings.from_env({"TOOL_REPAIR_ATTEMPTS": "-1"})


def test_public_names_are_exported() -> None:
    for name in ("ToolSettings", "needs_emulation", "ToolEmulator"):
        assert name in tools.__all__
    assert sorted(tools.__all__) == sorted(set(tools.__all__))
    assert all(hasattr(tools, name) for name in tools.__all__)


def test_environment_names_reach_the_tool_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented variables, read the way `chatbridge serve` reads them."""
    from chatbridge.config import Settings
    from chatbridge.runtime import tool_settings as _tool_settings

    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert _tool_settings(defaults) == ToolSettings(enabled=True, custom_prompt=None, repair_attempts=1)
    assert defaults.openai_compat_emulate_tools is False
    for name, value in {
        "ENABLE_TOOLIFY": "false", "TOOLIFY_CUSTOM_PROMPT": "Tools: {tool_list}", "TOOL_REPAIR_ATTEMPTS": "2",
        "OPENAI_COMPAT_EMULATE_TOOLS": "true",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert _tool_settings(settings) == ToolSettings(enabled=False, custom_prompt="Tools: {tool_list}", repair_attempts=2)
    assert settings.openai_compat_emulate_tools is True
