"""SIGTERM to a real `chatbridge serve`: short answers finish, long ones end in-band at the grace, exit 0."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProcess
from tests.upstreams import OpenAICompatEmulator, Reply

API_KEY = "sk-test-client-key-0123456789"
GRACE = 3.0
LONG = "word " * 8  # 40 characters in 30 pieces, 0.3 s apart: about 10 s
SHORT = "ok"  # 2 pieces: about 1.5 s


class StreamReader(threading.Thread):
    """Reads one streamed answer to its end, noting what arrived and when it ended."""

    def __init__(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.body, self.headers = url, body, headers
        self.text = ""
        self.status = 0
        self.started = threading.Event()
        self.ended_at = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url, json=self.body, headers=self.headers, timeout=30) as response:
                self.status = response.status_code
                for chunk in response.iter_text():
                    self.text += chunk
                    self.started.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.started.set()


@pytest.fixture
def slow_emu(compat_emu: OpenAICompatEmulator) -> OpenAICompatEmulator:
    compat_emu.stream_chunks = 30
    compat_emu.chunk_delay = 0.3

    def respond(body: dict[str, Any]) -> Reply:
        return Reply(answer=SHORT if "short" in json.dumps(body["messages"]) else LONG)

    compat_emu.responder = respond
    return compat_emu


def test_sigterm_lets_short_streams_finish_and_ends_long_ones_in_band(slow_emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    env = {"OPENAI_COMPAT_BASE_URL": slow_emu.base_url + "/v1", "K2THINK_ENABLED": "false", "VALID_API_KEY": API_KEY,
           "SHUTDOWN_GRACE_SECONDS": str(GRACE), "DATA_DIR": str(tmp_path / "data")}
    gateway = GatewayProcess(env, tmp_path).start()
    assert gateway.proc is not None
    auth = {"Authorization": f"Bearer {API_KEY}"}

    def chat(text: str) -> dict[str, Any]:
        return {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": text}]}

    short = StreamReader(gateway.base_url + "/v1/chat/completions", chat("a short one"), auth)
    long_openai = StreamReader(gateway.base_url + "/v1/chat/completions", chat("a long one"), auth)
    long_anthropic = StreamReader(gateway.base_url + "/v1/messages", {**chat("a long one"), "max_tokens": 100},
                                  {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"})
    readers = [short, long_openai, long_anthropic]
    try:
        for reader in readers:
            reader.start()
        for reader in readers:
            assert reader.started.wait(15), "the stream did not start"
        signalled = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.get(gateway.base_url + "/health", timeout=2)
        for reader in readers:
            reader.join(20)
        exit_code = gateway.proc.wait(20)
    finally:
        gateway.stop()

    assert exit_code == 0, gateway.output
    for reader in readers:
        assert reader.error is None and reader.status == 200, (reader.error, reader.text)
    # The short stream finished normally, well within the grace.
    assert short.text.rstrip().endswith("data: [DONE]"), short.text
    assert '"content":"o"' in short.text.replace(" ", "") and short.ended_at - signalled < GRACE
    # The long ones ended at the grace, with the dialect's own in-band error and no normal end.
    for reader in (long_openai, long_anthropic):
        assert GRACE - 0.5 <= reader.ended_at - signalled <= GRACE + 3, reader.ended_at - signalled
        assert "shutting down" in reader.text
    assert "[DONE]" not in long_openai.text
    last = [line for line in long_openai.text.splitlines() if line.startswith("data: ")][-1]
    assert json.loads(last[len("data: "):])["error"]["code"] == "shutting_down"
    assert "event: error" in long_anthropic.text and "message_stop" not in long_anthropic.text
    assert "Traceback" not in gateway.output
