"""How the gateway listens: the socket, the open-file limit, and uvicorn configured with the listener's limits.

`chatbridge serve` and the tests' in-process server both build their uvicorn config here, so
tests exercise the protocol and limits users run.
"""

from __future__ import annotations

import socket
from typing import Any

from chatbridge.api.listener import LimitedConfig, LimitedHttpToolsProtocol, ListenerLimits
from chatbridge.config import Settings

# File descriptors kept out of the connection cap: the listening socket, logs, state files, Redis.
_FD_RESERVE = 64
# Most file descriptors asked for when the hard limit is unlimited.
_FD_WANTED = 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit where the system allows it; the soft limit after."""
    try:
        import resource
    except ImportError:  # not on POSIX: nothing to raise
        return _FD_WANTED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _FD_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return _FD_WANTED if soft == resource.RLIM_INFINITY else soft


def open_file_limit() -> int:
    try:
        import resource
    except ImportError:
        return _FD_WANTED
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return _FD_WANTED if soft == resource.RLIM_INFINITY else soft


def listener_limits(settings: Settings, fd_limit: int | None = None) -> tuple[ListenerLimits, str | None]:
    """The limits from the settings, the connection cap lowered to fit the open-file limit (and why)."""
    fd_limit = open_file_limit() if fd_limit is None else fd_limit
    fits = max(1, (fd_limit - _FD_RESERVE) // 2)  # a proxied request holds its client's socket and an upstream one
    cap = min(settings.max_connections, fits)
    note = None
    if cap < settings.max_connections:
        note = (f"connections: at most {cap} at once, not MAX_CONNECTIONS={settings.max_connections}: the open-file "
                f"limit is {fd_limit} (raise it with `ulimit -n` or the container's nofile limit)")
    limits = ListenerLimits(
        max_header_bytes=settings.max_header_bytes, max_headers=settings.max_headers,
        header_timeout=settings.header_timeout, body_timeout=settings.body_timeout,
        keepalive_timeout=settings.keepalive_timeout, max_connections=cap,
    )
    return limits, note


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound and listening before anything says so; OSError says why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)  # worker processes serve the same socket
    return sock


def server_config(app: Any, limits: ListenerLimits, **options: Any) -> LimitedConfig:
    """uvicorn's config with the limited httptools protocol; `options` are uvicorn's own."""
    options.setdefault("log_config", None)
    return LimitedConfig(app, limits=limits, http=LimitedHttpToolsProtocol, lifespan="on", **options)
