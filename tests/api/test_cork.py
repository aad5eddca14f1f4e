"""The cork: what one loop turn writes leaves as one write, at the end of that turn, never later."""

from __future__ import annotations

import asyncio
import socket

import pytest

from chatbridge.api.cork import CorkedTransport


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def _one_turn() -> None:
    inner = _Transport()
    cork = CorkedTransport(inner, asyncio.get_running_loop())
    cork.write(b"HTTP/1.1 200 OK\r\n\r\n")
    cork.write(bytearray(b"data: 1\n\n"))
    cork.write(b"data: 2\n\n")
    assert inner.writes == []  # still this turn
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\ndata: 1\n\ndata: 2\n\n"]
    cork.write(b"data: 3\n\n")  # a later turn: its own write
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"data: 3\n\n"]


async def _close_and_eof() -> None:
    inner = _Transport()
    cork = CorkedTransport(inner, asyncio.get_running_loop())
    cork.write(b"last")
    cork.write_eof()
    assert inner.writes == [b"last"] and inner.eof
    cork.write(b"more")
    cork.close()
    assert inner.writes == [b"last", b"more"] and inner.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing, and never writes to a closed transport
    assert inner.writes == [b"last", b"more"]
    cork.write(b"after close")
    await asyncio.sleep(0)
    assert inner.writes == [b"last", b"more"]


async def _abort() -> None:
    inner = _Transport()
    inner.abort = lambda: setattr(inner, "closed", True)  # type: ignore[method-assign]
    cork = CorkedTransport(inner, asyncio.get_running_loop())
    cork.write(b"never")
    cork.abort()
    await asyncio.sleep(0)
    assert inner.writes == []


async def _real_socket(size: int) -> None:
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    with left, right:
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=left)
        cork = CorkedTransport(transport, loop)
        parts = [bytes([65 + n % 26]) * size for n in range(5)]
        for part in parts:
            cork.write(part)
        assert cork.get_write_buffer_size() >= 5 * size
        await asyncio.sleep(0)
        right.setblocking(False)
        got = b""
        while len(got) < 5 * size:
            got += await loop.sock_recv(right, 1 << 20)
        assert got == b"".join(parts)
        cork.close()


def test_the_writes_of_one_turn_leave_together_when_it_ends() -> None:
    asyncio.run(_one_turn())


def test_close_and_eof_send_what_is_kept_first_and_nothing_after() -> None:
    asyncio.run(_close_and_eof())


def test_abort_drops_what_is_kept() -> None:
    asyncio.run(_abort())


@pytest.mark.parametrize("size", [1, 70_000])
def test_a_real_socket_gets_the_bytes_in_order(size: int) -> None:
    asyncio.run(_real_socket(size))


class _Socket(_Transport):
    """What uvicorn's protocol asks of a connection's transport, besides writing."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def _written_by_the_listener(more_body: bool) -> tuple[bytes, bytes]:
    """What the socket had when the app's last `send` returned, and at the end."""
    from uvicorn.server import ServerState

    from chatbridge.api.listener import LimitedConfig, LimitedHttpToolsProtocol, ListenerLimits

    socket_ = _Socket()
    at_send: list[bytes] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        await receive()  # type: ignore[operator]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"part", "more_body": more_body})  # type: ignore[operator]
        at_send.append(b"".join(socket_.writes))  # the app's bookkeeping after its answer would run here
        if more_body:
            await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    config = LimitedConfig(app, limits=ListenerLimits(), lifespan="off", proxy_headers=False, log_config=None)
    config.load()
    protocol = LimitedHttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    protocol.connection_made(socket_)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
    for _ in range(10):
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return at_send[0], b"".join(socket_.writes)


def test_a_whole_answer_leaves_as_its_last_part_is_sent_not_after_the_apps_bookkeeping() -> None:
    at_send, written = asyncio.run(_written_by_the_listener(more_body=False))
    assert at_send.startswith(b"HTTP/1.1 200 OK\r\n") and at_send.endswith(b"\r\n4\r\npart\r\n0\r\n\r\n")  # already out
    assert written == at_send


def test_a_stream_in_progress_is_still_corked_until_the_turn_ends() -> None:
    at_send, written = asyncio.run(_written_by_the_listener(more_body=True))
    assert at_send == b""  # kept for the end of the turn, with whatever else it writes
    assert written.startswith(b"HTTP/1.1 200 OK\r\n") and b"part" in written
