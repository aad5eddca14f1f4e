"""Run an aiohttp application on loopback in a background thread.

Emulators must be real HTTP servers (the gateway's HTTP client, connection
pooling, timeouts and SSE decoding are what the tests exercise), yet tests and
benchmarks drive them from ordinary synchronous code or from a *different*
event loop (pytest-asyncio's). Running the server on its own loop in its own
thread keeps the two loops independent: a blocked test loop can never stall
the upstream, and vice versa.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

__all__ = ["BackgroundServer"]

_T = TypeVar("_T")

AppFactory = Callable[[], web.Application]


class BackgroundServer:
    """An aiohttp app served on ``127.0.0.1`` from a daemon thread.

    ``start()`` returns the base URL (``http://127.0.0.1:<port>``) once the
    socket is listening, so callers never race the bind. ``stop()`` shuts the
    server down and joins the thread. Also a context manager.

    Handler cancellation is enabled on purpose: when a client disconnects,
    aiohttp cancels the handler task, which is how emulators notice that the
    gateway abandoned an upstream request.
    """

    def __init__(
        self,
        app: web.Application | AppFactory,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 0.1,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        self._app_source = app
        self.loop_factory = loop_factory
        self.host = host
        self.requested_port = port
        self.shutdown_timeout = shutdown_timeout
        self.port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # -- public API -----------------------------------------------------

    @property
    def base_url(self) -> str:
        """Base URL without trailing slash; only valid while running."""
        if self.port is None:
            raise RuntimeError("server is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> str:
        """Bind, start serving, and return the base URL."""
        if self.running:
            return self.base_url
        sock = self._bind()
        self.port = sock.getsockname()[1]
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._thread_main, args=(sock,), name=f"upstream-{self.port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("background server did not start in time")
        if self._startup_error is not None:
            raise RuntimeError("background server failed to start") from self._startup_error
        return self.base_url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, cancel in-flight handlers and join the thread."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        self._thread = None
        self.loop = None
        self.port = None

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float = 10.0) -> _T:
        """Run a coroutine on the server loop from another thread."""
        if self.loop is None:
            raise RuntimeError("server is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------

    def _bind(self) -> socket.socket:
        """Bind before starting the thread so the port is known synchronously."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.requested_port))
        sock.listen(1024)
        sock.setblocking(False)
        return sock

    def _make_app(self) -> web.Application:
        if isinstance(self._app_source, web.Application):
            return self._app_source
        return self._app_source()

    def _thread_main(self, sock: socket.socket) -> None:
        loop = self.loop_factory() if self.loop_factory else asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            loop.run_until_complete(self._serve(sock))
        except BaseException as exc:  # reported to start(), which re-raises
            self._startup_error = exc
            sock.close()
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._shutdown(loop)

    async def _serve(self, sock: socket.socket) -> None:
        runner = web.AppRunner(
            self._make_app(),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=self.shutdown_timeout,
        )
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner

    def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        """Clean up the runner, then cancel whatever handlers still hang."""
        try:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
        finally:
            self._runner = None
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
