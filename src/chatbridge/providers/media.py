"""Images a client sends as `image_url` parts, loaded for an upstream that wants the bytes (an upload).

A `data:` URL is decoded; an `http(s)` URL is fetched, but only from public addresses: the URL
is the client's, and a gateway that fetched `http://127.0.0.1:…` or the cloud's metadata
address for anyone would be a way into the network it runs in. The check is made on every
address the name resolves to, at connect time (so a name that resolves differently later gains
nothing), redirects are followed by hand and checked the same way, and the size is bounded.
A problem with the image is the client's: `InvalidRequest` naming the part.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from chatbridge.core.errors import InvalidRequest
from chatbridge.core.secrets import redact
from chatbridge.core.types import ImagePart, Message

MAX_IMAGE_BYTES = 10 * 1024 * 1024
_MAX_REDIRECTS = 3
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp", "image/bmp": "bmp"}


@dataclass(frozen=True, slots=True)
class LoadedImage:
    data: bytes
    media_type: str
    name: str


def _is_public(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """Resolves names to public addresses only; a name with none is unresolvable."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [entry for entry in found if _is_public(entry["host"])]
        if not public:
            raise OSError(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


class ImageLoader:
    """Loads `image_url` parts; one session of its own (no cookies, public addresses only)."""

    def __init__(self, timeout: float, proxy: str | None = None, *, max_bytes: int = MAX_IMAGE_BYTES,
                 allow_private: bool = False) -> None:
        self.timeout = timeout
        self.proxy = proxy
        self.max_bytes = max_bytes
        self.allow_private = allow_private  # tests on loopback only
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            resolver = None if self.allow_private else PublicOnlyResolver()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=16, resolver=resolver), cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=self.timeout), proxy=self.proxy or None,
            )
        return self._session

    async def load(self, url: str, where: str) -> LoadedImage:
        """The image at `url`; `where` names the part for the error (`messages[0].content[1]`)."""
        if url.startswith("data:"):
            return self._data_url(url, where)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(f"{where}: image_url must be a data: URL or an http(s) URL", param=where)
        return await self._fetch(url, where)

    def _data_url(self, url: str, where: str) -> LoadedImage:
        header, comma, payload = url[5:].partition(",")
        if not comma:
            raise InvalidRequest(f"{where}: the data: URL has no data", param=where)
        try:
            data = base64.b64decode(payload, validate=True) if header.endswith(";base64") else unquote_to_bytes(payload)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"{where}: the data: URL is not valid base64", param=where) from None
        return self._checked(data, where)

    async def _fetch(self, url: str, where: str) -> LoadedImage:
        session = self._client()
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(_MAX_REDIRECTS + 1):
                    self._check_host(url, where)
                    async with session.get(url, allow_redirects=False) as response:
                        if response.status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                            url = urljoin(url, response.headers["Location"])
                            continue
                        if response.status >= 400:
                            raise InvalidRequest(f"{where}: fetching the image failed with HTTP {response.status}", param=where)
                        return self._checked(await self._read(response, where), where)
                raise InvalidRequest(f"{where}: the image URL redirects too often", param=where)
        except TimeoutError:
            raise InvalidRequest(f"{where}: the image did not arrive within {self.timeout:g} s", param=where) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise InvalidRequest(f"{where}: the image could not be fetched ({redact(str(exc)) or type(exc).__name__})",
                                 param=where) from None

    def _check_host(self, url: str, where: str) -> None:
        host = urlsplit(url).hostname or ""
        if urlsplit(url).scheme not in ("http", "https"):
            raise InvalidRequest(f"{where}: the image URL redirects away from http(s)", param=where)
        if self.allow_private:
            return
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            if host.lower() in ("localhost",) or host.lower().endswith(".localhost"):
                raise InvalidRequest(f"{where}: the gateway does not fetch images from private addresses", param=where) from None
            return  # a name: checked by the resolver at connect time
        if not _is_public(host):
            raise InvalidRequest(f"{where}: the gateway does not fetch images from private addresses", param=where)

    async def _read(self, response: aiohttp.ClientResponse, where: str) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise InvalidRequest(f"{where}: the image is larger than {self.max_bytes} bytes", param=where)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(65536):
            size += len(chunk)
            if size > self.max_bytes:
                raise InvalidRequest(f"{where}: the image is larger than {self.max_bytes} bytes", param=where)
            chunks.append(chunk)
        return b"".join(chunks)

    def _checked(self, data: bytes, where: str) -> LoadedImage:
        if not data:
            raise InvalidRequest(f"{where}: the image is empty", param=where)
        if len(data) > self.max_bytes:
            raise InvalidRequest(f"{where}: the image is larger than {self.max_bytes} bytes", param=where)
        sniffed = sniff_image(data)
        if sniffed is None:
            raise InvalidRequest(f"{where}: not an image (PNG, JPEG, GIF, WebP or BMP)", param=where)
        return LoadedImage(data, sniffed, f"image.{_EXTENSIONS[sniffed]}")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def sniff_image(data: bytes) -> str | None:
    """The image type by its first bytes (what a client declared is not trusted)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    return None




def image_parts(messages: list[Message]) -> list[tuple[int, int, ImagePart]]:
    """Every image part as (message index, part index, part), in order."""
    found: list[tuple[int, int, ImagePart]] = []
    for m_index, message in enumerate(messages):
        if isinstance(message.content, list):
            for p_index, part in enumerate(message.content):
                if isinstance(part, ImagePart):
                    found.append((m_index, p_index, part))
    return found


async def inline_images(messages: list[Message], loader: ImageLoader) -> list[Message]:
    """The messages with each linked image fetched (public addresses only) into a `data:` URL, for
    upstreams that take image bytes but no links; the same list when there is nothing to fetch."""
    linked = [found for found in image_parts(messages) if not found[2].url.startswith("data:")]
    if not linked:
        return messages
    copies = {m_index: list(messages[m_index].content or []) for m_index, _, _ in linked}
    for m_index, p_index, part in linked:
        image = await loader.load(part.url, f"messages[{m_index}].content[{p_index}].image_url.url")
        copies[m_index][p_index] = dataclasses.replace(
            part, url=f"data:{image.media_type};base64,{base64.b64encode(image.data).decode()}")
    return [dataclasses.replace(message, content=copies[i]) if i in copies else message  # type: ignore[arg-type]
            for i, message in enumerate(messages)]
