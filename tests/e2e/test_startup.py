"""A fresh install as a new user meets it: the console script, what it prints, the key aliases."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import httpx
import openai
import pytest

from chatbridge.config import Settings
from chatbridge.runtime import build_runtime, describe_keys
from tests.harness import GatewayProcess, GatewayServer
from tests.upstreams import K2ThinkEmulator

MODEL = "MBZUAI-IFM/K2-Think-v2"
HI = [{"role": "user", "content": "hi"}]
REASONING = "The user greets me. I should greet back."
ANSWER = "Hello! How can I help you today?"


def test_console_script_serves_a_fresh_install(k2emu: K2ThinkEmulator, tmp_path: Path) -> None:
    """README's first command, `chatbridge serve`, with nothing configured but the emulator's URL."""
    script = Path(sysconfig.get_path("scripts")) / "chatbridge"
    assert script.exists(), f"`pip install -e .` did not install the console script at {script}"
    process = GatewayProcess({"K2THINK_BASE_URL": k2emu.base_url}, tmp_path, command=[str(script), "serve"]).start()
    try:
        key = (tmp_path / "data" / "api_key").read_text().strip()
        client = openai.OpenAI(base_url=process.base_url + "/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
        chunks = list(client.chat.completions.create(model=MODEL, messages=HI, stream=True))  # type: ignore[arg-type]
    finally:
        process.stop()
    assert (reply.choices[0].message.content, reply.choices[0].message.reasoning_content) == (ANSWER, REASONING)  # type: ignore[attr-defined]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices) == REASONING
    assert k2emu.requests_to("/api/guest/chat/completions"), "a fresh install must answer in guest mode"
    output = process.output
    assert f"listening on http://127.0.0.1:{process.port}" in output
    assert "k2think: guest mode, no tokens configured" in output
    assert "openai: disabled (set OPENAI_COMPAT_BASE_URL to enable)" in output
    assert output.count(key) == 1 and key.startswith("sk-cb-")
    assert "Traceback" not in output


@pytest.mark.parametrize("source", ["environment", ".env"])
@pytest.mark.parametrize("variable", ["API_MASTER_KEY", "API_KEY"])
def test_client_key_aliases(
    variable: str, source: str, k2emu: K2ThinkEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = "alias-key-one-0123456789, alias-key-two-0123456789"
    if source == ".env":  # the working directory is tmp_path (see the clean_environ fixture)
        (tmp_path / ".env").write_text(f"{variable}={value}\n")
    else:
        monkeypatch.setenv(variable, value)
    settings = Settings(data_dir=tmp_path / "data", k2think_base_url=k2emu.base_url)  # type: ignore[call-arg]
    gw = GatewayServer(settings).start()
    try:
        body = {"model": MODEL, "messages": HI}
        with httpx.Client(base_url=gw.base_url, timeout=30) as http:
            by_bearer = http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer alias-key-two-0123456789"})
            by_header = http.post("/v1/chat/completions", json=body, headers={"x-api-key": "alias-key-one-0123456789"})
            wrong = http.post("/v1/chat/completions", json=body, headers={"x-api-key": "alias-key-three-0123456789"})
    finally:
        gw.stop()
    assert by_bearer.status_code == by_header.status_code == 200
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert not (tmp_path / "data" / "api_key").exists(), "a configured key must not generate another"


def test_valid_api_key_wins_over_its_aliases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "from-api-key-0123456789")
    monkeypatch.setenv("VALID_API_KEY", "from-valid-api-key-0123456789")
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]
    assert settings.client_keys == ["from-valid-api-key-0123456789"]


def test_startup_report_names_the_proxy_and_hides_passwords_in_urls(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path / "data", valid_api_key="sk-client-key-abcdef-0123456789",
        proxy_url="http://proxyuser:proxy-pass-0123456789@127.0.0.1:3128",
        openai_compat_base_url="http://user:upstream-pass-0123456789@127.0.0.1:11434/v1", openai_compat_models="m",
    )
    runtime = build_runtime(settings)
    printed = "\n".join([*runtime.report, *describe_keys(runtime)])
    assert "outbound proxy: http://proxyuser:[secure]@127.0.0.1:3128" in printed
    assert "openai: http://user:[secure]@127.0.0.1:11434/v1 (models: m)" in printed
    assert "k2think: guest mode, no tokens configured" in printed
    for secret in ("proxy-pass-0123456789", "upstream-pass-0123456789", "sk-client-key-abcdef-0123456789"):
        assert secret not in printed


def test_workers_serve_from_several_processes_sharing_keys(k2emu: K2ThinkEmulator, tmp_path: Path) -> None:
    """`chatbridge serve --workers 2`: two worker processes answer, with the key made once before the fork."""
    import psutil

    process = GatewayProcess({"K2THINK_BASE_URL": k2emu.base_url}, tmp_path,
                             command=[sys.executable, "-m", "chatbridge", "serve", "--workers", "2"]).start()
    try:
        key = (tmp_path / "data" / "api_key").read_text().strip()
        client = openai.OpenAI(base_url=process.base_url + "/v1", api_key=key, max_retries=0)
        replies = [client.chat.completions.create(model=MODEL, messages=HI) for _ in range(8)]  # type: ignore[arg-type]
        assert process.proc is not None
        commands = []
        for child in psutil.Process(process.proc.pid).children(recursive=True):
            try:
                commands.append(" ".join(child.cmdline()))
            except psutil.Error:  # a helper process that came and went
                pass
    finally:
        process.stop()
    assert all(r.choices[0].message.content == ANSWER for r in replies)
    assert len([c for c in commands if "spawn_main" in c]) == 2, commands  # uvicorn's worker processes
    assert process.output.count(key) == 1  # printed once, by the parent, not once per worker
