"""The per-request call marker: the one call format the injected prompt teaches.

A call is a JSON object between an opening and a closing tag that carry a random token:

    <tool_call_k3x9qz>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call_k3x9qz>

Why this shape:

- The token is drawn per request, so the tag cannot occur in prose, code, quoted documents or
  tool results by accident; a model that *talks about* the format without following it with a
  JSON object is a false alarm the parser releases as text.
- Tags are what models are trained on for tool calls (Hermes/Qwen `<tool_call>`, Anthropic
  `<function_calls>`), so they reproduce them reliably. A model that drops the suffix writes
  `<tool_call>`, which the parser accepts as a fallback.
- The closing tag makes "complete" explicit, so a reply cut off mid-call is recognisably
  truncated rather than silently turned into empty arguments.
- One block per call: several calls are several blocks, in order.

Tool results go back to the model wrapped in `<tool_result_<token> ...>` tags for the same
reason: a tool output containing `</tool_result>` cannot break out of its wrapper.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from typing import Any

_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN_LENGTH = 6
_CALL_ID_ALPHABET = string.ascii_letters + string.digits

GENERIC_OPEN_TAG = "<tool_call>"
GENERIC_CLOSE_TAG = "</tool_call>"


@dataclass(frozen=True, slots=True)
class CallMarker:
    """The random token of one request and the tags derived from it."""

    token: str

    @classmethod
    def generate(cls, rng: random.Random) -> CallMarker:
        return cls("".join(rng.choice(_ALPHABET) for _ in range(_TOKEN_LENGTH)))

    @property
    def open_tag(self) -> str:
        return f"<tool_call_{self.token}>"

    @property
    def close_tag(self) -> str:
        return f"</tool_call_{self.token}>"

    def render_call(self, name: str, arguments: Any) -> str:
        """One call block, exactly as the prompt asks the model to write it."""
        body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
        return f"{self.open_tag}\n{body}\n{self.close_tag}"

    def result_open(self, name: str, call_id: str) -> str:
        """Opening tag of a tool result; attribute values are JSON-quoted so any name is safe."""
        return (
            f"<tool_result_{self.token} name={json.dumps(name, ensure_ascii=False)} "
            f"call_id={json.dumps(call_id, ensure_ascii=False)}>"
        )

    @property
    def result_close(self) -> str:
        return f"</tool_result_{self.token}>"


def new_call_id(rng: random.Random) -> str:
    """An OpenAI-looking call id: `call_` plus 24 random letters and digits."""
    return "call_" + "".join(rng.choice(_CALL_ID_ALPHABET) for _ in range(24))
