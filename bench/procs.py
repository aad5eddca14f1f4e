"""The processes a benchmark run starts: emulators, chatbridge gateways and LiteLLM's proxy.

Every process listens on a free loopback port, is pinned to a CPU set with `taskset` when the
machine has one (so the server under test and the load generator do not fight over a core),
and runs in its own session so `stop()` can end it and any workers it forked, by process group.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = Path(__file__).resolve().parent / ".venv-litellm"
API_KEY = "sk-bench-0123456789abcdef"
MODEL = "fake-model"
STREAM_MODEL = "fake-model-stream"
K2_MODEL = "MBZUAI-IFM/K2-Think-v2"

# Environment variables that would configure a server behind the benchmark's back.
_SCRUB_PREFIXES = ("K2THINK_", "OPENAI_COMPAT_", "LITELLM_", "TOKENS_FILE", "ACCOUNTS_FILE", "WORKERS")
_SCRUB_NAMES = {
    "VALID_API_KEY", "API_MASTER_KEY", "API_KEY", "ADMIN_API_KEY", "CLIENT_KEYS_FILE", "PROXY_URL", "HOST", "PORT", "DATA_DIR",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The CPUs this process may use, read once at import: the harness later pins itself to the
# client CPU, and children must still be placed on the server CPU by `taskset`.
_ALLOWED_CPUS = frozenset(os.sched_getaffinity(0))


def can_pin() -> bool:
    """Pin only where CPUs 0 and 1 are both ours and `taskset` is there to do it."""
    return shutil.which("taskset") is not None and {0, 1} <= _ALLOWED_CPUS


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if k not in _SCRUB_NAMES and not k.upper().startswith(_SCRUB_PREFIXES)
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Service:
    """One child process serving HTTP on `port`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        cpus: str | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_path: str = "/",
        log_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.cpus = cpus if can_pin() else None
        self.env = clean_env(env)
        self.cwd = cwd or ROOT
        self.ready_path = ready_path
        self.log_path = (log_dir or Path(tempfile.gettempdir())) / f"bench-{name}-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def start(self) -> Service:
        command = ["taskset", "-c", self.cpus, *self.argv] if self.cpus else self.argv
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 60.0) -> Service:
        deadline = time.monotonic() + timeout
        url = self.base_url + self.ready_path
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status < 500:
                        return self.check_pinned()
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return self.check_pinned()
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def check_pinned(self) -> Service:
        """Fail loudly if the process is not on the CPUs it was meant for: figures taken with
        the server and the load generator on one core would be silently wrong."""
        if self.cpus is None:
            return self

        wanted = {int(c) for c in self.cpus.split(",")}
        for proc in self.processes():
            actual = set(proc.cpu_affinity())  # type: ignore[attr-defined]
            if actual != wanted:
                raise RuntimeError(f"{self.name} runs on CPUs {sorted(actual)}, not {sorted(wanted)}")
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def processes(self) -> list[object]:
        """The server process and its children (uvicorn workers), as psutil processes."""
        import psutil

        try:
            main = psutil.Process(self.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss_kib(self) -> int:
        import psutil

        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss  # type: ignore[attr-defined]
            except psutil.NoSuchProcess:
                pass
        return total // 1024

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for proc in self.processes():
            try:
                times = proc.cpu_times()  # type: ignore[attr-defined]
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # our own child's group: it and its workers
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


# -- the services ----------------------------------------------------------------------------


def openai_emulator(name: str, cpus: str | None, *, chunks: int = 4, delay: float = 0.0, log_dir: Path | None = None) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "tests.upstreams.openai_compat", "--port", str(port), "--uvloop",
            "--chunks", str(chunks), "--delay", str(delay)]
    return Service(name, argv, port=port, cpus=cpus, ready_path="/v1/models", log_dir=log_dir)


def floor_server(name: str, cpus: str | None, *, log_dir: Path | None = None) -> Service:
    """uvicorn serving a constant answer from a bare ASGI app (bench/floor.py)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.floor", "server", "--port", str(port)]
    return Service(name, argv, port=port, cpus=cpus, ready_path="/", log_dir=log_dir)


def floor_proxy(name: str, cpus: str | None, *, upstream: Service, log_dir: Path | None = None) -> Service:
    """The minimal proxy (bench/floor.py): uvicorn + aiohttp passing bytes through to `upstream`."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.floor", "proxy", "--port", str(port), "--upstream", upstream.base_url]
    return Service(name, argv, port=port, cpus=cpus, ready_path="/", log_dir=log_dir)


def floor_client(url: str, cpus: str | None, *, concurrency: int, seconds: float) -> dict[str, object]:
    """aiohttp alone, configured as chatbridge's providers configure it: CPU per request."""
    argv = [sys.executable, "-m", "bench.floor", "client", "--url", url,
            "--concurrency", str(concurrency), "--seconds", str(seconds)]
    command = ["taskset", "-c", cpus, *argv] if cpus and can_pin() else argv
    out = subprocess.run(command, cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                         timeout=seconds + 60, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def k2think_emulator(name: str, cpus: str | None, *, chunks: int | None = None, log_dir: Path | None = None) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "tests.upstreams.k2think", "--port", str(port), "--uvloop"]
    if chunks:
        argv += ["--chunks", str(chunks)]
    return Service(name, argv, port=port, cpus=cpus, ready_path="/api/models", log_dir=log_dir)


def fake_jwt(days: int = 365) -> str:
    """An unsigned-looking JWT with a far expiry; the K2Think emulator accepts any token."""
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {"sub": "bench", "exp": int(time.time()) + days * 86400}
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{part('bench-signature')}"


def gateway(
    name: str,
    cpus: str | None,
    *,
    openai_upstream: Service | None = None,
    k2think_upstream: Service | None = None,
    workers: int = 1,
    work_dir: Path,
    log_dir: Path | None = None,
    src: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Service:
    """`chatbridge serve` as users run it, without access log and at LOG_LEVEL=WARNING.

    `src`: the checkout's `src/` whose code runs (first on PYTHONPATH); default this checkout's,
    whatever `pip install -e` points at. `env` adds variables (REDIS_URL).
    """
    port = free_port()
    data = work_dir / f"data-{name}"
    data.mkdir(parents=True, exist_ok=True)
    extra = dict(env or {})
    env = {"PYTHONPATH": str(src or ROOT / "src"), "VALID_API_KEY": API_KEY, "LOG_LEVEL": "WARNING", "DATA_DIR": str(data), "K2THINK_ENABLED": "false",
           "KIMI_ENABLED": "false"}  # guest Kimi would reach out to www.kimi.com at start
    if openai_upstream is not None:
        env["OPENAI_COMPAT_BASE_URL"] = openai_upstream.base_url + "/v1"
        env["OPENAI_COMPAT_MODELS"] = f"{MODEL},{STREAM_MODEL}"
    if k2think_upstream is not None:
        env.update(K2THINK_ENABLED="true", K2THINK_BASE_URL=k2think_upstream.base_url, K2THINK_TOKEN=fake_jwt())
    env.update(extra)
    argv = [sys.executable, "-m", "chatbridge", "serve", "--no-access-log", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers)]
    # cwd: an empty directory, so no developer's .env is read
    return Service(name, argv, port=port, cpus=cpus, env=env, cwd=work_dir, ready_path="/health", log_dir=log_dir)


# -- LiteLLM -------------------------------------------------------------------------------------


def unexpected_pth(venv: Path = LITELLM_VENV, allowed: Sequence[str] = ()) -> list[Path]:
    """`.pth` files in the venv that are not on the allow-list (install_litellm.sh allows none)."""
    return sorted(p for p in venv.rglob("*.pth") if p.name not in set(allowed))


def litellm_status(venv: Path = LITELLM_VENV) -> tuple[bool, str]:
    """Whether LiteLLM's proxy may be started, and why not."""
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        return False, f"not installed (run `bash bench/install_litellm.sh` to create {venv.name})"
    found = unexpected_pth(venv)
    if found:
        names = ", ".join(str(p.relative_to(venv)) for p in found)
        return False, f"refused: unexpected .pth file(s) in the venv: {names}"
    metadata = list(venv.glob("lib/python*/site-packages/litellm-*.dist-info"))
    version = metadata[0].name.removeprefix("litellm-").removesuffix(".dist-info") if metadata else "?"
    if version in ("1.82.7", "1.82.8") or version.startswith("1.107."):
        return False, f"refused: litellm {version} is a compromised release"
    return True, version


def litellm_proxy(
    name: str,
    cpus: str | None,
    *,
    upstream: Service,
    stream_upstream: Service | None,
    work_dir: Path,
    log_dir: Path | None = None,
) -> Service:
    port = free_port()
    entries = [(MODEL, upstream)] + ([(STREAM_MODEL, stream_upstream)] if stream_upstream else [])
    lines = ["model_list:"]
    for model, target in entries:
        lines += [
            f"  - model_name: {model}",
            "    litellm_params:",
            f"      model: openai/{MODEL}",
            f"      api_base: {target.base_url}/v1",
            "      api_key: sk-dummy",
        ]
    lines += ["general_settings:", f"  master_key: {API_KEY}", "litellm_settings:", "  telemetry: false"]
    config = work_dir / f"litellm-{name}.yaml"
    config.write_text("\n".join(lines) + "\n")
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "WARNING", "LITELLM_TELEMETRY": "False"}
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    return Service(name, argv, port=port, cpus=cpus, env=env, cwd=work_dir, ready_path="/health/liveliness", log_dir=log_dir)
