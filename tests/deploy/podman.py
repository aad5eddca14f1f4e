"""A real container engine for the deployment tests: podman, installed on demand where possible.

No image registry is reachable where these tests run, so `python:3.11-slim` is a local stand-in
made by shared/tools/podman-base.sh, and nginx and Redis are stand-ins built from Debian packages
(tests/deploy/standins/). Every call is bounded by a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
BASE_IMAGE = "docker.io/library/python:3.11-slim"
# The environment podman and podman-compose run with, taken before any test fixture edits it.
ENGINE_ENV = dict(os.environ)


class Podman:
    """Thin wrapper: `podman ARGS` with a timeout, failing loudly with podman's own output."""

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.executable, *args], capture_output=True, text=True, timeout=timeout,
                              env=ENGINE_ENV, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def out(self, *args: str, timeout: float = 120) -> str:
        return self.run(*args, timeout=timeout).stdout.strip()

    def build(self, tag: str, dockerfile: Path, context: Path, *extra_tags: str, timeout: float = 1200) -> None:
        """`--format docker` keeps HEALTHCHECK (OCI drops it); `--pull=never`: no registry here."""
        self.run("build", "--format", "docker", "--pull=never", "--layers", "-f", str(dockerfile),
                 "-t", tag, *(arg for t in extra_tags for arg in ("-t", t)), str(context), timeout=timeout)

    def host_port(self, container: str, port: int) -> int:
        """The host port `-p 127.0.0.1::PORT` was given."""
        line = self.out("port", container, f"{port}/tcp").splitlines()[0]
        return int(line.rsplit(":", 1)[1])

    def remove_containers(self, *names: str) -> None:
        if names:
            self.run("rm", "-f", "-v", "-t", "2", *names, check=False, timeout=60)  # -v: their anonymous /data too


def find_podman() -> tuple[Podman | None, str]:
    """podman with the base image ready, else (None, why not). Installs both when running as root."""
    setup = Path(os.environ.get("CHATBRIDGE_PODMAN_SETUP", ROOT.parent / "shared" / "tools" / "podman-base.sh"))
    executable = shutil.which("podman")
    if executable is not None and _has_base_image(executable):
        return Podman(executable), ""
    if os.geteuid() != 0:
        return None, "podman (or its python:3.11-slim base image) is missing and installing it needs root"
    if not setup.is_file():
        return None, f"podman (or its base image) is missing and the installer {setup} is not here"
    proc = subprocess.run(["bash", str(setup)], capture_output=True, text=True, timeout=900, env=ENGINE_ENV,
                          check=False)
    executable = shutil.which("podman")
    if proc.returncode != 0 or executable is None or not _has_base_image(executable):
        return None, f"{setup} could not install podman here (exit {proc.returncode}): {proc.stderr[-800:]}"
    return Podman(executable), ""


def _has_base_image(executable: str) -> bool:
    proc = subprocess.run([executable, "image", "exists", BASE_IMAGE], capture_output=True, timeout=60,
                          env=ENGINE_ENV, check=False)
    return proc.returncode == 0


def compose(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """podman-compose (the PyPI package, installed with the `test` extra) on deploy/compose.yaml."""
    return subprocess.run([sys.executable, "-m", "podman_compose", "-f", str(ROOT / "deploy" / "compose.yaml"), *args],
                          capture_output=True, text=True, timeout=timeout, env={**ENGINE_ENV, **env}, check=False)


def wait_healthy(url: str, timeout: float = 90) -> httpx.Response:
    """GET `url` until it answers 200; the last failure is raised when time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return response
            failure: Exception = AssertionError(f"{url} answered {response.status_code}: {response.text[:300]}")
        except httpx.HTTPError as exc:
            failure = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never answered 200 within {timeout}s") from failure
        time.sleep(0.5)
