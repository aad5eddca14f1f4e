"""A request shaped as recent Claude Code sends it (written from the gateway-protocol notes), answered
streamed, over K2Think (emulated tools) and an OpenAI-compatible upstream (native tools).

The shape: `/v1/messages?beta=true`, `Authorization: Bearer` (ANTHROPIC_AUTH_TOKEN), a list of
betas, `x-app: cli` and the `x-claude-code-session-id` header; a system array whose first block
is the attribution header; tools with `cache_control`; adaptive thinking with `output_config`
effort; `context_management`; `metadata.user_id`; a `<system-reminder>` user block.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.test_anthropic_messages import sse_events
from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator, Reply

K2 = "MBZUAI-IFM/K2-Think-v2"
ATTRIBUTION = "x-anthropic-billing-header: cc_version=2.1.90.a1b; cc_entrypoint=cli; cch=00000;"
IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
SESSION = "9b2f6c1e-0d4a-4f7e-9a51-3c2d8e7f6a10"
USER_ID = f"user_5f1d_account_2c9e_session_{SESSION}"

HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14,"
                      "context-management-2025-06-27,mid-conversation-system-2026-04-07,per-turn-control-2026-07-01",
    "anthropic-dangerous-direct-browser-access": "true",
    "x-app": "cli",
    "user-agent": "claude-cli/2.1.90 (external, cli)",
    "x-claude-code-session-id": SESSION,
    "x-stainless-lang": "js", "x-stainless-retry-count": "0", "x-stainless-timeout": "600",
}


def claude_code_request(model: str) -> dict[str, Any]:
    bash = {"name": "Bash", "description": "Executes a given bash command in a persistent shell session.",
            "input_schema": {"type": "object", "properties": {
                "command": {"type": "string", "description": "The command to execute"},
                "description": {"type": "string"}, "timeout": {"type": "number"}},
                "required": ["command"], "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#"}}
    read = {"name": "Read", "description": "Reads a file from the local filesystem.",
            "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"},
                                                               "offset": {"type": "number"}},
                             "required": ["file_path"], "additionalProperties": False,
                             "$schema": "http://json-schema.org/draft-07/schema#"},
            "cache_control": {"type": "ephemeral"}}
    return {
        "model": model,
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": ATTRIBUTION},
            {"type": "text", "text": IDENTITY, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering "
                                     "tasks.\n\n# Tone and style\nBe concise.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>\nAs you answer the user's questions, you can use the "
                                         "following context: the working directory is /repo.\n</system-reminder>"},
                {"type": "text", "text": "How many files are in this directory?", "cache_control": {"type": "ephemeral"}},
            ]},
        ],
        "tools": [bash, read],
        "metadata": {"user_id": USER_ID},
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    }


def k2_agent(body: dict[str, Any]) -> Reply:
    system = "\n".join(str(m["content"]) for m in body["messages"] if m["role"] == "system")
    token = re.search(r"<tool_call_([a-z0-9]+)>", system)
    assert token
    call = json.dumps({"name": "Bash", "arguments": {"command": "ls | wc -l", "description": "Count files"}})
    return Reply(reasoning="I should count the files with ls.",
                 answer=f"I'll count them.\n<tool_call_{token.group(1)}>\n{call}\n</tool_call_{token.group(1)}>")


def compat_agent(body: dict[str, Any]) -> Reply:
    return Reply(reasoning="I should count the files with ls.", answer="I'll count them.", tool_calls=[
        {"name": "Bash", "arguments": {"command": "ls | wc -l", "description": "Count files"}}])


@pytest.mark.parametrize("upstream", ["k2think", "openai"])
def test_claude_code_request_is_answered_streamed(upstream: str, k2emu: K2ThinkEmulator, compat_emu: OpenAICompatEmulator,
                                                  start_gateway: Callable[..., GatewayServer]) -> None:
    if upstream == "k2think":
        k2emu.responder = k2_agent
        gw = start_gateway(k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token(),
                           anthropic_model_map=f"claude-sonnet-4-5*={K2},claude-*haiku*={K2}")
        emulator: Any = k2emu
    else:
        compat_emu.responder = compat_agent
        gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", openai_compat_models="fake-model",
                           k2think_enabled=False, anthropic_default_model="fake-model")
        emulator = compat_emu
    request = claude_code_request("claude-sonnet-4-5-20250929")
    with httpx.Client(base_url=gw.base_url, timeout=30) as http:
        assert http.head("/").status_code == 200
        response = http.post("/v1/messages?beta=true", content=orjson.dumps(request),
                             headers={**HEADERS, "authorization": f"Bearer {gw.api_key}",
                                      "content-type": "application/json"})
        counted = http.post("/v1/messages/count_tokens?beta=true", json={k: v for k, v in request.items()
                                                                         if k not in ("max_tokens", "stream")},
                            headers={**HEADERS, "authorization": f"Bearer {gw.api_key}"})
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-1] == "message_stop"
    assert events[0][1]["message"]["model"] == "claude-sonnet-4-5-20250929"
    assert events[0][1]["message"]["usage"]["input_tokens"] == counted.json()["input_tokens"] > 100
    blocks = [d["content_block"] for n, d in events if n == "content_block_start"]
    # Adaptive thinking asked for, but neither upstream signs its reasoning: no thinking block (none forged).
    assert [b["type"] for b in blocks] == ["text", "tool_use"]
    assert [d["index"] for n, d in events if n == "content_block_start"] == [0, 1]
    assert "I should count the files" not in response.text
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta" and d["index"] == 0)
    assert text == "I'll count them."
    tool = blocks[1]
    assert tool["name"] == "Bash" and tool["id"].startswith("toolu_") and tool["input"] == {}
    arguments = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta" and d["index"] == 1)
    assert json.loads(arguments) == {"command": "ls | wc -l", "description": "Count files"}
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] > 0

    sent = emulator.last_request.json
    system = sent["messages"][0]
    assert system["role"] == "system"
    system_text = system["content"] if isinstance(system["content"], str) else json.dumps(system["content"])
    assert system_text.index(ATTRIBUTION) < system_text.index(IDENTITY) < system_text.index("# Tone and style")
    assert "How many files are in this directory?" in json.dumps(sent["messages"][1:])
    assert "context_management" not in sent and "metadata" not in sent
    if upstream == "openai":
        assert sent["user"] == USER_ID  # the session key
        assert [t["function"]["name"] for t in sent["tools"]] == ["Bash", "Read"]
        assert "reasoning_effort" not in sent  # effort is not forced on an upstream that may not reason
