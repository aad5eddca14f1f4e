"""Loading `image_url` parts: data URLs, http(s) fetches bounded in size, never from private addresses."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from chatbridge.core.errors import InvalidRequest
from chatbridge.core.types import ImagePart, Message, TextPart
from chatbridge.providers.media import ImageLoader, PublicOnlyResolver, inline_images, sniff_image

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


async def serving(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                  test: Callable[[str], Awaitable[Any]]) -> Any:
    app = web.Application()
    app.router.add_get("/{name}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        return await test(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


async def images(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == "moved.png":
        raise web.HTTPFound("/cat.png")
    if name == "big.png":
        return web.Response(body=PNG + b"\x00" * 5000)
    if name == "page.png":
        return web.Response(text="<html>not an image</html>", content_type="text/html")
    if name == "missing.png":
        raise web.HTTPNotFound()
    return web.Response(body=PNG, content_type="application/octet-stream")


def test_data_urls_are_decoded_and_the_type_is_sniffed_not_trusted() -> None:
    loader = ImageLoader(5)
    image = asyncio.run(loader.load("data:image/jpeg;base64," + base64.b64encode(PNG).decode(), "m[0]"))
    assert image.data == PNG and image.media_type == "image/png" and image.name == "image.png"


def test_an_http_image_is_fetched_following_redirects_within_its_size() -> None:
    async def test(base: str) -> None:
        loader = ImageLoader(5, allow_private=True, max_bytes=1000)
        try:
            assert (await loader.load(f"{base}/moved.png", "m[0]")).data == PNG
            for name, says in (("big.png", "larger than 1000 bytes"), ("page.png", "not an image"),
                               ("missing.png", "HTTP 404")):
                with pytest.raises(InvalidRequest, match=says):
                    await loader.load(f"{base}/{name}", "m[0]")
        finally:
            await loader.aclose()

    asyncio.run(serving(images, test))


def test_private_addresses_are_refused_however_they_are_reached() -> None:
    async def test(base: str) -> None:
        loader = ImageLoader(5)
        try:
            for url in (f"{base}/cat.png", "http://[::1]/x.png", "http://10.0.0.1/x.png", "http://169.254.169.254/latest",
                        "http://localhost/x.png"):
                with pytest.raises(InvalidRequest, match="private addresses"):
                    await loader.load(url, "messages[0].content[0]")
        finally:
            await loader.aclose()

    asyncio.run(serving(images, test))


def test_the_resolver_drops_every_private_address_of_a_name() -> None:
    async def main() -> None:
        resolver = PublicOnlyResolver()
        try:
            with pytest.raises(OSError, match="no public address"):
                await resolver.resolve("localhost", 80)
        finally:
            await resolver.close()

    asyncio.run(main())


def test_sniffing_knows_the_common_formats() -> None:
    assert sniff_image(b"\xff\xd8\xff\xe0") == "image/jpeg" and sniff_image(b"GIF89a") == "image/gif"
    assert sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8") == "image/webp" and sniff_image(b"hello") is None


def test_linked_images_are_inlined_as_data_urls_and_everything_else_is_kept() -> None:
    async def test(base: str) -> None:
        loader = ImageLoader(5, allow_private=True)
        inline = "data:image/png;base64," + base64.b64encode(PNG).decode()
        messages = [Message(role="user", content="hi"),
                    Message(role="user", content=[TextPart("look"), ImagePart(f"{base}/cat.png", detail="low"),
                                                  ImagePart(inline)])]
        try:
            out = await inline_images(messages, loader)
            assert out[0] is messages[0] and messages[1].content[1].url == f"{base}/cat.png"  # type: ignore[index,union-attr]
            assert out[1].content == [TextPart("look"), ImagePart(inline, detail="low"), ImagePart(inline)]
            assert await inline_images(out, loader) is out  # nothing left to fetch
            with pytest.raises(InvalidRequest) as caught:
                await inline_images([Message(role="user", content=[ImagePart(f"{base}/missing.png")])], loader)
            assert caught.value.param == "messages[0].content[0].image_url.url"
        finally:
            await loader.aclose()

    asyncio.run(serving(images, test))
