"""Settings and the seam to the pipeline: what turns emulation on and how upstream is called."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from chatbridge.core.types import ChatRequest, Event

_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class ToolSettings:
    """Tool-call emulation settings.

    `custom_prompt` replaces the prompt template; its placeholders are documented in
    `chatbridge.features.tools.prompt` (`{tool_list}`, `{call_format}`, `{open_tag}`,
    `{close_tag}`, and the aliases `{tools_list}`/`{trigger_signal}` of the original tools).
    """

    enabled: bool = True  # ENABLE_TOOLIFY
    custom_prompt: str | None = None  # TOOLIFY_CUSTOM_PROMPT
    repair_attempts: int = 1  # TOOL_REPAIR_ATTEMPTS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ToolSettings:
        """Read `ENABLE_TOOLIFY`, `TOOLIFY_CUSTOM_PROMPT` and `TOOL_REPAIR_ATTEMPTS`."""
        enabled = env.get("ENABLE_TOOLIFY", "true").strip().lower() not in _FALSE
        prompt = env.get("TOOLIFY_CUSTOM_PROMPT") or None
        attempts = int(env.get("TOOL_REPAIR_ATTEMPTS", "1"))
        if attempts < 0:
            raise ValueError("TOOL_REPAIR_ATTEMPTS must be 0 or more")
        return cls(enabled=enabled, custom_prompt=prompt, repair_attempts=attempts)


UpstreamCall = Callable[[ChatRequest], AsyncIterator[Event]]


def needs_emulation(request: ChatRequest, settings: ToolSettings) -> bool:
    """True when the request carries tools (or tool history) and emulation is on."""
    if not settings.enabled:
        return False
    if request.tools:
        return True
    return any(m.role == "tool" or m.tool_calls for m in request.messages)
