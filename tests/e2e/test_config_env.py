"""Configuration that only shows end to end: `.env`, PROXY_URL, a refused single token."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.harness import GatewayProcess, GatewayServer
from tests.upstreams import K2ThinkEmulator

MODEL = "MBZUAI-IFM/K2-Think-v2"
HI = [{"role": "user", "content": "hi"}]


class ForwardProxy:
    """A minimal HTTP forward proxy on loopback that counts what passes through it."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        server.close()
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, _, rest = head.partition(b"\r\n")
        method, target, version = request_line.decode().split(" ")
        self.requests.append(f"{method} {target}")
        url = httpx.URL(target)
        upstream_reader, upstream_writer = await asyncio.open_connection(url.host, url.port)
        origin_form = url.raw_path.decode()
        upstream_writer.write(f"{method} {origin_form} {version}\r\n".encode() + rest)
        await upstream_writer.drain()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def __enter__(self) -> ForwardProxy:
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as forward:
        yield forward


def test_proxy_url_carries_every_upstream_call(k2emu: K2ThinkEmulator, proxy: ForwardProxy, k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway(proxy_url=f"http://127.0.0.1:{proxy.port}")
    client = gw.openai()
    assert client.chat.completions.create(model=MODEL, messages=HI).choices[0].message.content  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(model=MODEL, messages=HI, stream=True) if c.choices)  # type: ignore[arg-type]
    # The proxy sees the first request on each connection it carries (kept alive after that).
    assert proxy.requests and set(proxy.requests) == {f"POST {k2emu.base_url}/api/chat/completions"}
    assert len(k2emu.requests_to("/api/chat/completions")) == 2


def test_dotenv_file_is_read(k2emu: K2ThinkEmulator, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"VALID_API_KEY=sk-from-dotenv-file-0001\nK2THINK_BASE_URL={k2emu.base_url}\nDATA_DIR={tmp_path / 'd'}\n"
    )
    process = GatewayProcess({}, tmp_path).start()
    try:
        client = openai.OpenAI(base_url=process.base_url + "/v1", api_key="sk-from-dotenv-file-0001", max_retries=0)
        assert client.chat.completions.create(model=MODEL, messages=HI).choices[0].message.content  # type: ignore[arg-type]
    finally:
        process.stop()


def test_a_refused_only_token_is_a_clear_error(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    token = k2emu.mint_token(state="revoked")
    gw = k2_gateway(k2think_token=token)
    with pytest.raises(openai.APIStatusError) as caught:
        gw.openai().chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code in (502, 503)
    assert "k2think" in caught.value.message and token not in caught.value.message
    assert token not in gw.logs.text


def test_expired_token_is_never_sent(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    expired = k2emu.mint_token(exp_in=-60)
    gw = k2_gateway(k2think_token=expired)
    with pytest.raises(openai.APIStatusError) as caught:
        gw.openai().chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code == 503
    assert expired not in k2emu.used_tokens
