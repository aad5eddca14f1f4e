"""Tool calling for upstreams without it: prompt injection, a streaming parser, validation.

The pipeline uses three names::

    if needs_emulation(request, settings):
        events = ToolEmulator(request, settings).run(call_upstream)

`ToolEmulator.run` builds the upstream request(s) itself (tool prompt added to the system
message, tool history rewritten, `tools` emptied) and yields client-facing events, including
OpenAI-shaped `ToolCallDelta`s and exactly one final `Finish`. The other exports are the pieces
it is built from, for tests and for providers that want to parse a complete answer.
"""

from __future__ import annotations

from chatbridge.features.tools.emulator import ToolEmulator
from chatbridge.features.tools.envelope import ParsedCall
from chatbridge.features.tools.history import rewrite_history, with_system_prompt
from chatbridge.features.tools.markers import CallMarker
from chatbridge.features.tools.parser import (
    CallsOutput,
    MalformedOutput,
    ParserOutput,
    TextOutput,
    ToolCallParser,
    TruncatedOutput,
)
from chatbridge.features.tools.prompt import DEFAULT_TEMPLATE, build_tool_prompt
from chatbridge.features.tools.reply import ParsedReply, ReplyBuilder, parse_reply
from chatbridge.features.tools.schemas import ToolProblem, schema_problem, tool_problem
from chatbridge.features.tools.settings import ToolSettings, UpstreamCall, needs_emulation
from chatbridge.features.tools.validate import CallValidator

__all__ = [
    "DEFAULT_TEMPLATE",
    "CallMarker",
    "CallValidator",
    "CallsOutput",
    "MalformedOutput",
    "ParsedCall",
    "ParsedReply",
    "ParserOutput",
    "ReplyBuilder",
    "TextOutput",
    "ToolCallParser",
    "ToolEmulator",
    "ToolProblem",
    "ToolSettings",
    "TruncatedOutput",
    "UpstreamCall",
    "build_tool_prompt",
    "needs_emulation",
    "parse_reply",
    "rewrite_history",
    "schema_problem",
    "tool_problem",
    "with_system_prompt",
]
