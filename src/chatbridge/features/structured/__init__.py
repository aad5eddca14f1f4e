"""`response_format` (`json_object`, `json_schema`) for upstreams that do not honour it.

The pipeline uses `needs_emulation(request)` and drives a `FormatEmulator` round by round
(see `emulator.py`); providers with `native_response_format` get the field itself.
"""

from __future__ import annotations

from chatbridge.features.structured.answer import Verdict, judge
from chatbridge.features.structured.emulator import REPAIR_ROUNDS, FormatEmulator, needs_emulation
from chatbridge.features.structured.prompt import format_instruction, repair_message

__all__ = ["REPAIR_ROUNDS", "FormatEmulator", "Verdict", "format_instruction", "judge", "needs_emulation", "repair_message"]
