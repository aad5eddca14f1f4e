"""The listener holds against clients that send too much or too slowly (issue 10, points 1 and 2).

Raw sockets, because these clients are not well-behaved HTTP clients: huge or countless headers
(431), headers or bodies dribbled (408), connections opened and left idle, more connections
than the cap. The in-process server runs the same protocol class and limits as `chatbridge
serve` (tests/harness.py); one test runs the real command.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from chatbridge.api.server import listener_limits, raise_open_file_limit
from tests.harness import GatewayProcess, GatewayServer, make_settings

KEY = b"sk-test-client-key-0123456789"
WAIT = 20.0  # the longest any answer may take in these tests: generous for a loaded machine


def _connect(gw: GatewayServer | GatewayProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT)
    return sock


def _read_all(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """Everything the server sends until it closes the connection (or resets it after answering)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response[9:12])


def _error(response: bytes) -> dict[str, object]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    error = orjson.loads(body)["error"]
    assert isinstance(error, dict)
    return error


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes `sock` (EOF or reset, after an answer or not) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if sock.recv(65536) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        pass
    return False


@contextmanager
def _sockets(count: int, gw: GatewayServer, first_bytes: bytes = b"") -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = _connect(gw)
            if first_bytes:
                sock.sendall(first_bytes)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


# --- header size and count (431) ---------------------------------------------------------------


@pytest.mark.parametrize("request_head", [
    pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", id="one big header"),
    pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n",
                 id="too many headers"),
    pytest.param(b"GET /health?" + b"q" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="long request line"),
    pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(90))
                 + b"\r\n", id="many headers over the byte limit"),
])
def test_oversized_request_heads_get_431(request_head: bytes, start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(k2think_enabled=False)
    with _connect(gw) as sock:
        sock.sendall(request_head)
        response = _read_all(sock)
    assert _status(response) == 431
    error = _error(response)
    assert error["code"] == "request_header_fields_too_large"
    assert "MAX_HEADER" in str(error["message"])


@pytest.mark.parametrize(("request_bytes", "anthropic"), [
    pytest.param(b"FOO /health HTTP/1.1\r\nHost: x\r\n\r\n", False, id="unknown method"),
    pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", False,
                 id="negative content-length"),
    pytest.param(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                 True, id="content-length beside chunked"),
    pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", False, id="NUL in a header"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False, id="HTTP/2 preface"),
])
def test_malformed_http_gets_a_400_in_the_apis_envelope(
    request_bytes: bytes, anthropic: bool, start_gateway: Callable[..., GatewayServer],
) -> None:
    """Not uvicorn's plain-text "Invalid HTTP request received.": JSON naming what the parser refused."""
    gw = start_gateway(k2think_enabled=False)
    with _connect(gw) as sock:
        sock.sendall(request_bytes)
        response = _read_all(sock)
    assert _status(response) == 400
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    if anthropic:
        assert orjson.loads(body)["error"]["type"] == "invalid_request_error"
    else:
        error = _error(response)
        assert error["code"] == "invalid_http_request" and "not valid HTTP/1.1" in str(error["message"])


def test_request_heads_within_the_limits_are_served(start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(k2think_enabled=False)
    headers = {f"x-h{i}": "v" * 600 for i in range(90)}  # ~55 KB in 90 headers, under 64 KiB and 100
    with httpx.Client(base_url=gw.base_url, timeout=WAIT) as http:
        assert http.get("/health", headers=headers).status_code == 200


def test_a_limit_is_configurable(start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(k2think_enabled=False, max_header_bytes=4096, max_headers=10)
    with httpx.Client(base_url=gw.base_url, timeout=WAIT) as http:
        assert http.get("/health", headers={"x-a": "a" * 5000}).status_code == 431
        assert http.get("/health", headers={f"x-{i}": "1" for i in range(12)}).status_code == 431
        assert http.get("/health", headers={"x-a": "a" * 3000}).status_code == 200


def test_endless_headers_are_cut_off_and_memory_stays_flat(start_gateway: Callable[..., GatewayServer]) -> None:
    """Four connections each streaming a 24 MB header: answered 431 early, the gateway does not hold them."""
    gw = start_gateway(k2think_enabled=False)
    process = psutil.Process()
    before = process.memory_info().rss
    statuses = []
    for _ in range(4):
        with _connect(gw) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(24):  # as a client that watches for an early answer would
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(b"a" * (1 << 20))
            statuses.append(_status(_read_all(sock)))
    grown = process.memory_info().rss - before
    assert statuses == [431] * 4
    assert grown < 16 * 2**20, f"RSS grew by {grown >> 20} MiB"


# --- time to send a request (408) --------------------------------------------------------------


def test_headers_dribbled_too_slowly_get_408(start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(k2think_enabled=False, header_timeout=1.0)
    with _connect(gw) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        sock.settimeout(WAIT)
        response = b""
        while time.monotonic() - started < WAIT:  # one header line every 0.2 s, never the blank line
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.2)
            try:
                response += sock.recv(65536)
            except TimeoutError:
                continue
            if response:
                break
        response += _read_all(sock)
        elapsed = time.monotonic() - started
    assert _status(response) == 408
    assert "HEADER_TIMEOUT" in str(_error(response)["message"])
    assert elapsed < WAIT / 2


def test_a_body_dribbled_too_slowly_gets_408(start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(k2think_enabled=False, body_timeout=1.0)
    with _connect(gw) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":")
        response = _read_all(sock)
    assert _status(response) == 408
    error = _error(response)
    assert error["code"] == "request_timeout" and "BODY_TIMEOUT" in str(error["message"])
    assert "Traceback" not in gw.logs.text and "unexpected error" not in gw.logs.text


def test_a_connection_that_never_sends_is_closed(start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(k2think_enabled=False, header_timeout=1.0)
    with _connect(gw) as sock:
        assert _closed_by_server(sock, WAIT)


def test_blank_lines_between_requests_keep_nothing_open(start_gateway: Callable[..., GatewayServer]) -> None:
    """Bytes that begin no request (CRLFs, which a parser skips) do not hold a connection past HEADER_TIMEOUT."""
    gw = start_gateway(k2think_enabled=False, keepalive_timeout=60.0, header_timeout=1.0)
    with _connect(gw) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(WAIT)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < WAIT:
            try:
                sock.sendall(b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            closed = _closed_by_server(sock, 0.3)
    assert time.monotonic() - started < WAIT


def test_an_idle_kept_alive_connection_is_closed(start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(k2think_enabled=False, keepalive_timeout=1.0, header_timeout=60.0)
    with _connect(gw) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(WAIT)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert _closed_by_server(sock, WAIT)
        assert time.monotonic() - started < 30


def test_a_slow_but_steady_request_on_a_kept_alive_connection_is_served(start_gateway: Callable[..., GatewayServer]) -> None:
    """The header deadline runs per request: a second request split over reads is still answered."""
    gw = start_gateway(k2think_enabled=False, header_timeout=5.0)
    with _connect(gw) as sock:
        for _ in range(2):
            for piece in (b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
                sock.sendall(piece)
                time.sleep(0.05)
            sock.settimeout(WAIT)
            head = sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200"), head[:100]


# --- how many connections ----------------------------------------------------------------------


def test_idle_connections_make_room_for_new_clients(start_gateway: Callable[..., GatewayServer]) -> None:
    """At the cap, the longest-idle connection is closed, so a flood of idle sockets cannot lock clients out."""
    gw = start_gateway(k2think_enabled=False, max_connections=20, header_timeout=120.0)
    with _sockets(60, gw, first_bytes=b"GET /health HTTP/1.1\r\n") as idle:
        with httpx.Client(base_url=gw.base_url, timeout=WAIT) as http:
            statuses = [http.get("/health").status_code for _ in range(5)]
        assert statuses == [200] * 5
        assert _closed_by_server(idle[0], WAIT), "the oldest idle connection should have been closed for room"
        still_open = sum(not _closed_by_server(sock, 0.05) for sock in idle[-10:])
    assert still_open >= 5  # the newest are kept: only what is needed is closed


def test_when_every_connection_is_busy_a_newcomer_gets_503(start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(k2think_enabled=False, max_connections=5, body_timeout=120.0)
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY
            + b"\r\nContent-Length: 1000\r\n\r\n{")
    with _sockets(5, gw, first_bytes=head) as busy:
        time.sleep(0.5)  # let the server read the heads: these requests are in flight, not idle
        with _connect(gw) as newcomer:
            newcomer.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            response = _read_all(newcomer)
        assert all(not _closed_by_server(sock, 0.05) for sock in busy)
    assert _status(response) == 503
    assert _error(response)["code"] == "too_many_connections"
    with httpx.Client(base_url=gw.base_url, timeout=WAIT) as http:  # the slots are free again
        deadline = time.monotonic() + WAIT
        while (status := http.get("/health").status_code) == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert status == 200


def test_a_slowloris_flood_does_not_lock_out_normal_requests(start_gateway: Callable[..., GatewayServer]) -> None:
    """Hundreds of connections dribbling headers, over the cap: normal requests are served throughout."""
    gw = start_gateway(k2think_enabled=False, max_connections=100, header_timeout=2.0)
    with _sockets(300, gw, first_bytes=b"GET /health HTTP/1.1\r\nX-a: b\r\n") as flood:
        with httpx.Client(base_url=gw.base_url, timeout=WAIT) as http:
            statuses = {http.get("/health").status_code for _ in range(10)}
        time.sleep(3)  # past HEADER_TIMEOUT: whatever was still open is answered 408 and closed
        assert all(_closed_by_server(sock, WAIT) for sock in flood[-20:])
    assert statuses == {200}


def test_the_connection_cap_fits_the_open_file_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_connections=5000)
    limits, note = listener_limits(settings, fd_limit=1024)
    assert limits.max_connections == (1024 - 64) // 2
    assert note is not None and "1024" in note and "MAX_CONNECTIONS=5000" in note
    limits, note = listener_limits(settings, fd_limit=1 << 20)
    assert limits.max_connections == 5000 and note is None


def test_the_soft_open_file_limit_is_raised_at_start() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard open-file limit leaves nothing to raise")
    code = ("import resource; from chatbridge.api.server import raise_open_file_limit; "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
            "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
    reported, now = (int(v) for v in result.stdout.split())
    assert reported == now > 256
    assert raise_open_file_limit() >= soft


def test_chatbridge_serve_runs_the_limited_listener(tmp_path: Path) -> None:
    """The command users run (uvloop, its own socket) enforces the same limits."""
    env = {"K2THINK_ENABLED": "false", "HEADER_TIMEOUT": "1", "DATA_DIR": str(tmp_path / "data"),
           "VALID_API_KEY": KEY.decode()}
    process = GatewayProcess(env, tmp_path).start()
    try:
        with _connect(process) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
            too_big = _read_all(sock)
        with _connect(process) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            too_slow = _read_all(sock)
    finally:
        process.stop()
    assert _status(too_big) == 431 and _status(too_slow) == 408
