"""Run the real gateway on a free loopback port for end-to-end tests.

`GatewayServer` runs uvicorn in a background thread (like httpx's `serve_in_thread`), so tests
talk real HTTP to it with the official SDKs. `GatewayProcess` runs `python -m chatbridge serve`
as a child process, for tests that need a restart or the process's own output.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from chatbridge.api.app import create_app
from chatbridge.api.server import listener_limits, server_config
from chatbridge.config import Settings
from chatbridge.runtime import build_runtime

API_KEY = "sk-test-client-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LogCapture(logging.Handler):
    """Every formatted log line the gateway wrote while a test ran.

    Deliberately without the production redacting filter: tests that grep these lines for
    tokens prove the code never logs one, not merely that the last line of defence works.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class GatewayServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = build_runtime(settings)
        self.app = create_app(self.runtime)
        self.port = free_port()
        limits, _ = listener_limits(settings)  # the protocol and limits `chatbridge serve` runs with
        self.server = uvicorn.Server(server_config(
            self.app, limits, host="127.0.0.1", port=self.port, access_log=False, loop="asyncio",
            timeout_graceful_shutdown=2,
        ))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.logs = LogCapture()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_key(self) -> str:
        return self.runtime.client_keys[0]

    def start(self) -> GatewayServer:
        logging.getLogger().addHandler(self.logs)
        logging.getLogger().setLevel(logging.DEBUG)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        logging.getLogger().removeHandler(self.logs)

    def openai(self, **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=kwargs.pop("api_key", self.api_key), max_retries=0, **kwargs)

    def anthropic(self, **kwargs: Any) -> Any:
        """The official `anthropic` client, by `x-api-key` (or `auth_token=` for a Bearer token, as Claude Code)."""
        import anthropic

        if "auth_token" not in kwargs:
            kwargs.setdefault("api_key", self.api_key)
        return anthropic.Anthropic(base_url=self.base_url, max_retries=kwargs.pop("max_retries", 0), **kwargs)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=30)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "valid_api_key": API_KEY,
        "request_timeout": 5.0,
        "max_retries": 3,
        "k2think_enabled": True,
        "kimi_enabled": False,  # on by default (guest mode); tests that want it turn it on
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class GatewayProcess:
    """`python -m chatbridge serve` (or another `command`) with a given environment; output goes to a file."""

    def __init__(self, env: dict[str, str], cwd: Path, command: list[str] | None = None) -> None:
        self.port = free_port()
        self.cwd = cwd
        self.command = command or [sys.executable, "-m", "chatbridge", "serve"]
        self.log_path = cwd / f"gateway-{self.port}.log"
        # Kimi is on by default (guest mode, registering at www.kimi.com): off unless a test turns it on.
        self.env = {**_clean_environ(), "KIMI_ENABLED": "false", **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> GatewayProcess:  # generous: spawned workers start slowly on a loaded machine
        return self.spawn().wait_ready(timeout)

    def spawn(self) -> GatewayProcess:
        """Start the process without waiting for it (several can then start side by side)."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout: float = 60) -> GatewayProcess:
        """Wait until the spawned gateway says it listens and answers `/health`."""
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.output}")
            if "serve" in self.command and "listening on http://" not in self.output:
                time.sleep(0.05)  # not bound yet: whatever answers on the port now is not this gateway
                continue
            try:
                httpx.get(self.base_url + "/health", timeout=0.5)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"gateway did not start:\n{self.output}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown hook runs, nothing is released."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


_LEAKY_VARS = (
    "VALID_API_KEY", "API_KEY", "API_MASTER_KEY", "ADMIN_API_KEY", "CLIENT_KEYS_FILE", "K2THINK_TOKEN", "TOKENS_FILE", "ACCOUNTS_FILE",
    "K2THINK_BASE_URL", "K2THINK_API_URL", "PROXY_URL", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy",
    "https_proxy", "all_proxy", "OPENAI_COMPAT_BASE_URL", "OPENAI_COMPAT_API_KEY", "OPENAI_COMPAT_MODELS",
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "DATA_DIR",
    "ENABLE_TOKEN_AUTO_UPDATE", "KIRO_ACCESS_TOKEN", "KIRO_REFRESH_TOKEN", "PORT", "HOST",
    "KIMI_ENABLED", "KIMI_BASE_URL", "KIMI_AUTH_URL", "KIMI_REFRESH_TOKEN", "KIMI_TOKENS_FILE",
    "KIRO_TOKEN_FILE", "KIRO_TOKEN_FILES", "KIRO_API_KEY", "KIRO_PROFILE_ARN", "KIRO_REGION", "KIRO_API_BASE",
    "KIRO_MANAGEMENT_BASE", "KIRO_AUTH_BASE", "KIRO_OIDC_BASE",
)


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _LEAKY_VARS}
