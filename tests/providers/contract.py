"""What every provider's emulator-backed harness offers the contract suite (`test_contract.py`).

A new provider adds a harness here (its emulator, its model id, how to script an answer, a
tool call and a failure) and one entry in `HARNESSES`; it is registered only once the whole
suite passes for it.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, KimiEmulator, KimiReply, KiroEmulator, OpenAICompatEmulator, Reply
from tests.upstreams.kiro_frames import KiroReply

StartGateway = Callable[..., GatewayServer]


class ProviderHarness(Protocol):
    model: str
    emulator: Any
    # How a stream cut off after some content ends: None, an in-band error; a finish reason, a truncated
    # answer (Kiro's streams are reset when idle, and its notes say to read that as truncation).
    cut_off_finish: str | None

    def start(self, start_gateway: StartGateway) -> GatewayServer: ...

    def answer(self, text: str) -> None:
        """Every following request is answered with `text`."""

    def call_tool(self, name: str, arguments: dict[str, Any], then: str) -> None:
        """The model calls `name` with `arguments`; once it sees the tool's result it answers `then`."""

    def fail(self, status: int, times: int = 1) -> None:
        """The next `times` chat requests get HTTP `status`."""

    def break_midway(self) -> None:
        """Streams are cut off after some of the answer has been sent."""

    def chat_requests(self) -> int:
        """How many chat requests the upstream has seen."""


class K2ThinkHarness:
    model = "MBZUAI-IFM/K2-Think-v2"
    cut_off_finish = None

    def __init__(self) -> None:
        self.emulator = K2ThinkEmulator()

    def start(self, start_gateway: StartGateway) -> GatewayServer:
        """Two tokens, so a failure on one is retried on the other."""
        tokens = Path(tempfile.mkdtemp()) / "tokens.txt"
        tokens.write_text(f"{self.emulator.mint_token()}\n{self.emulator.mint_token()}\n")
        return start_gateway(k2think_base_url=self.emulator.base_url, tokens_file=tokens)

    def answer(self, text: str) -> None:
        self.emulator.reply = Reply(reasoning="Thinking it over.", answer=text)

    def call_tool(self, name: str, arguments: dict[str, Any], then: str) -> None:
        def respond(body: dict[str, Any]) -> Reply:
            last = str(body["messages"][-1]["content"])
            if re.search(r"<tool_result_[A-Za-z0-9]+ ", last):
                return Reply(reasoning="I have the result.", answer=then)
            system = "\n".join(str(m["content"]) for m in body["messages"] if m["role"] == "system")
            token = re.search(r"<tool_call_([A-Za-z0-9]+)>", system)
            assert token, "the tool prompt did not reach the upstream"
            call = json.dumps({"name": name, "arguments": arguments})
            tag = token.group(1)
            return Reply(reasoning="I need the tool.", answer=f"<tool_call_{tag}>\n{call}\n</tool_call_{tag}>")

        self.emulator.responder = respond

    def fail(self, status: int, times: int = 1) -> None:
        self.emulator.fail_next(times, status)

    def break_midway(self) -> None:
        self.emulator.break_mid_stream = True
        self.emulator.interrupt_after_events = 7  # reasoning and a first piece of the answer are out

    def chat_requests(self) -> int:
        return len(self.emulator.chat_requests)

    def __enter__(self) -> K2ThinkHarness:
        self.emulator.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.stop()


class OpenAICompatHarness:
    model = "fake-model"
    cut_off_finish = None

    def __init__(self) -> None:
        self.emulator = OpenAICompatEmulator()

    def start(self, start_gateway: StartGateway) -> GatewayServer:
        return start_gateway(k2think_enabled=False, openai_compat_base_url=self.emulator.base_url + "/v1")

    def answer(self, text: str) -> None:
        self.emulator.answer = text

    def call_tool(self, name: str, arguments: dict[str, Any], then: str) -> None:
        def respond(body: dict[str, Any]) -> Reply:
            if body["messages"][-1]["role"] == "tool":
                return Reply(answer=then)
            return Reply(tool_calls=[{"name": name, "arguments": arguments}])

        self.emulator.responder = respond

    def fail(self, status: int, times: int = 1) -> None:
        self.emulator.fail_next(times, status)

    def break_midway(self) -> None:
        self.emulator.break_mid_stream = True
        self.emulator.interrupt_after_events = 2

    def chat_requests(self) -> int:
        return len(self.emulator.requests_to("/v1/chat/completions"))

    def __enter__(self) -> OpenAICompatHarness:
        self.emulator.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.stop()


class KimiHarness:
    model = "kimi"
    cut_off_finish = None

    def __init__(self) -> None:
        self.emulator = KimiEmulator()

    def start(self, start_gateway: StartGateway) -> GatewayServer:
        """Two accounts in a tokens file, so a failure on one is retried on the other."""
        tokens = Path(tempfile.mkdtemp()) / "kimi-tokens.txt"
        tokens.write_text(f"{self.emulator.mint_refresh_token()}\n{self.emulator.mint_refresh_token()}\n")
        return start_gateway(k2think_enabled=False, kimi_enabled=True, kimi_base_url=self.emulator.base_url,
                             kimi_auth_url=self.emulator.base_url, kimi_tokens_file=tokens)

    def answer(self, text: str) -> None:
        self.emulator.reply = KimiReply(text=text, thinking="Thinking it over.")

    def call_tool(self, name: str, arguments: dict[str, Any], then: str) -> None:
        def respond(call: Any, history: list[dict[str, str]]) -> KimiReply:
            if re.search(rf'<tool_result_[A-Za-z0-9]+ name="{name}"', call.text):  # the prompt's example says TOOL_NAME
                return KimiReply(text=then, thinking="I have the result.")
            token = re.search(r"<tool_call_([A-Za-z0-9]+)>", call.text)
            assert token, "the tool prompt did not reach the upstream"
            tag = token.group(1)
            return KimiReply(text=f"<tool_call_{tag}>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call_{tag}>")

        self.emulator.respond = respond

    def fail(self, status: int, times: int = 1) -> None:
        self.emulator.fail_next(times, status)

    def break_midway(self) -> None:
        self.emulator.break_mid_stream = True
        self.emulator.interrupt_after_events = 7  # the chat, the messages and a first piece of the answer are out

    def chat_requests(self) -> int:
        return len(self.emulator.chat_requests)

    def __enter__(self) -> KimiHarness:
        self.emulator.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.stop()


class KiroHarness:
    model = "claude-sonnet-4.5"
    cut_off_finish = "length"

    def __init__(self) -> None:
        self.emulator = KiroEmulator()

    def start(self, start_gateway: StartGateway) -> GatewayServer:
        """Two IDE logins (KIRO_TOKEN_FILES), so a failure on one is retried on the other."""
        folder = Path(tempfile.mkdtemp())
        for index in range(2):
            self.emulator.write_social_file(folder / f"login-{index}.json", self.emulator.add_account())
        base = self.emulator.base_url
        return start_gateway(k2think_enabled=False, kiro_token_file=folder / "none.json",
                             kiro_token_files=str(folder / "login-*.json"), kiro_api_base=base,
                             kiro_management_base=base, kiro_auth_base=base, kiro_oidc_base=base)

    def answer(self, text: str) -> None:
        self.emulator.reply = KiroReply(text=text)

    def call_tool(self, name: str, arguments: dict[str, Any], then: str) -> None:
        def respond(body: dict[str, Any]) -> KiroReply:
            context = body["conversationState"]["currentMessage"]["userInputMessage"].get("userInputMessageContext", {})
            if context.get("toolResults"):
                return KiroReply(text=then)
            return KiroReply(text="", tool_calls=[{"name": name, "input": arguments}])

        self.emulator.responder = respond

    def fail(self, status: int, times: int = 1) -> None:
        self.emulator.fail_next(times, status)

    def break_midway(self) -> None:
        self.emulator.break_mid_stream = True
        self.emulator.interrupt_after_events = 2

    def chat_requests(self) -> int:
        return len(self.emulator.chat_requests)

    def __enter__(self) -> KiroHarness:
        self.emulator.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.stop()


HARNESSES: dict[str, Callable[[], AbstractContextManager[Any]]] = {
    "k2think": K2ThinkHarness,
    "kiro": KiroHarness,
    "kimi": KimiHarness,
    "openai": OpenAICompatHarness,
}
