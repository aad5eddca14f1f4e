"""The cluster's own servers: a redis-server the test may stop and restart, and nginx in the foreground.

Both are real binaries on loopback ports picked for the test; every wait is bounded and `stop()`
is safe to call twice, so a fixture can tear down whatever started even when a later step failed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.harness import free_port

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def find_nginx() -> str | None:
    """Debian's /usr/sbin/nginx (not on a non-root PATH), or whatever `nginx` PATH has."""
    for candidate in NGINX_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("nginx")


def find_redis_server() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.access(p, os.X_OK)), None)


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class RedisServer:
    """`redis-server --save '' --appendonly no` on a free port: nothing survives a stop, as in the issue."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> RedisServer:
        """Start (or start again, on the same port) and wait until it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log_path.read_text(errors='replace')}")
            if self.ping():
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING in time")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: Redis goes away at once, the way a crashed or unreachable server does."""
        _stop(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        _stop(self.proc)


NGINX_CONF = """\
# Written by tests/cluster: the shape deploy/nginx.conf has, on loopback ports.
worker_processes 1;
{user}
error_log {dir}/error.log info;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    upstream chatbridge {{
        least_conn;
{servers}
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 10m;

        location / {{
            proxy_pass http://chatbridge;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Request-Id $request_id;
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 600s;
            proxy_send_timeout 600s;
            gzip off;
            # which replica answered, named by nginx itself: how the tests see requests cross replicas
            add_header X-Upstream-Addr $upstream_addr always;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground (`daemon off`) with a config in the test's folder, balancing the replicas."""

    def __init__(self, binary: str, workdir: Path, upstream_ports: list[int]) -> None:
        self.binary = binary
        self.workdir = workdir
        self.upstream_ports = upstream_ports
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"        server 127.0.0.1:{port};" for port in self.upstream_ports)
        # As root the workers would drop to `nobody`, who cannot enter pytest's 0700 folders.
        user = "user root;" if os.geteuid() == 0 else ""
        conf = self.workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(user=user, dir=self.workdir, servers=servers, port=self.port))
        return conf

    def start(self, attempts: int = 3, timeout: float = 10) -> Nginx:
        """Start on a free port (another picked if that port was taken meanwhile) and wait until it proxies."""
        for _ in range(attempts):
            self.port = free_port()
            conf = self.write_config()
            with (self.workdir / "stderr.log").open("ab") as stderr:
                self.proc = subprocess.Popen(
                    [self.binary, "-p", str(self.workdir), "-c", str(conf), "-g", "daemon off;"],
                    stdout=subprocess.DEVNULL, stderr=stderr,
                )
            if self._wait_ready(timeout):
                return self
            _stop(self.proc)
            if "Address already in use" not in self.error_log + self._stderr():
                break
        raise RuntimeError(f"nginx did not start:\n{self._stderr()}\n{self.error_log}")

    def _stderr(self) -> str:
        path = self.workdir / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        _stop(self.proc, signal.SIGQUIT)  # graceful: workers finish what they hold, then exit
