"""The original Ki2API's zero-configuration start: the IDE's token file at its default path, nothing else.

`chatbridge serve` runs as its own process with HOME pointing at a folder holding only
`~/.aws/sso/cache/kiro-auth-token.json` (and Kiro's hosts pointing at the emulator), and the
original tool's README curl commands are run with the real `curl`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kiro_helpers import ide_token_file
from tests.harness import GatewayProcess
from tests.upstreams import KiroEmulator
from tests.upstreams.kiro_frames import KiroReply

INTRODUCTION = "你好！我是 Claude，一个由 Anthropic 开发的 AI 助手。"
POEM = "春风拂面暖，\n桃花映水红。\n燕子归来早，\n万物竞葱茏。"


def curl(*args: str) -> str:
    done = subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def zero_config_gateway(kiro_emu: KiroEmulator, tmp_path: Path) -> Iterator[tuple[GatewayProcess, str]]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    home = tmp_path / "home"
    kiro_emu.write_social_file(ide_token_file(home), kiro_emu.add_account())

    def answer(body: dict[str, object]) -> KiroReply:
        asked = json.dumps(body, ensure_ascii=False)
        return KiroReply(text=POEM if "春天的诗" in asked else INTRODUCTION, pieces=6)

    kiro_emu.responder = answer
    env = {"HOME": str(home), "K2THINK_ENABLED": "false", "KIRO_API_BASE": kiro_emu.base_url,
           "KIRO_MANAGEMENT_BASE": kiro_emu.base_url, "KIRO_AUTH_BASE": kiro_emu.base_url}
    process = GatewayProcess(env, tmp_path).start()
    key = (tmp_path / "data" / "api_key").read_text().strip()
    yield process, key
    process.stop()


def test_the_original_tools_curl_commands(zero_config_gateway: tuple[GatewayProcess, str], kiro_emu: KiroEmulator) -> None:
    process, key = zero_config_gateway
    base, auth = process.base_url, f"Authorization: Bearer {key}"

    models = json.loads(curl("-H", auth, f"{base}/v1/models"))
    assert "claude-sonnet-4-20250514" in [m["id"] for m in models["data"]] and models["object"] == "list"

    health = json.loads(curl(f"{base}/health"))
    assert health["status"] == "ok" and health["providers"]["kiro"]["credentials"]["active"] == 1

    reply = json.loads(curl("-X", "POST", f"{base}/v1/chat/completions", "-H", auth, "-H", "Content-Type: application/json",
                            "-d", json.dumps({"model": "claude-sonnet-4-20250514", "max_tokens": 1000,
                                              "messages": [{"role": "user", "content": "你好，请介绍一下自己"}]},
                                             ensure_ascii=False)))
    assert reply["choices"][0]["message"]["content"] == INTRODUCTION
    assert reply["model"] == "claude-sonnet-4-20250514" and reply["choices"][0]["finish_reason"] == "stop"

    stream = curl("-N", "-X", "POST", f"{base}/v1/chat/completions", "-H", auth, "-H", "Content-Type: application/json",
                  "-d", json.dumps({"model": "claude-sonnet-4-20250514", "stream": True, "max_tokens": 500,
                                    "messages": [{"role": "user", "content": "写一首关于春天的诗"}]}, ensure_ascii=False))
    events = [line[len("data: "):] for line in stream.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == POEM
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    sent = [r.json["conversationState"]["currentMessage"]["userInputMessage"] for r in kiro_emu.chat_requests]
    assert [m["content"] for m in sent] == ["你好，请介绍一下自己", "写一首关于春天的诗"]
    assert all(m["modelId"] == "claude-sonnet-4" for m in sent) and kiro_emu.rejections == []
    assert "kiro: enabled with zero configuration, from the Kiro IDE's login: 1 credential(s) (1 social login" in process.output
    assert "Traceback" not in process.output


def test_without_the_token_file_kiro_is_off_and_says_how_to_enable_it(tmp_path: Path) -> None:
    from chatbridge.config import Settings
    from chatbridge.runtime import build_runtime

    runtime = build_runtime(Settings(_env_file=None, data_dir=tmp_path / "data"))  # type: ignore[call-arg]
    [line] = [line for line in runtime.report if line.startswith("kiro:")]
    assert "disabled (no Kiro login at" in line and "KIRO_TOKEN_FILE" in line
