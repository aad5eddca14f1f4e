"""Upstream HTTP: one pooled aiohttp session per provider, and errors mapped at the seam.

Every aiohttp exception, whether raised while connecting or while reading the body, leaves
this module already translated into the `UpstreamError` tree, so no provider or pipeline code
ever catches aiohttp types.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from chatbridge.core.errors import (
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamTransportError,
)
from chatbridge.core.secrets import redact


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """What every provider's HTTP client shares."""

    request_timeout: float = 60.0  # connect + time to response headers
    idle_timeout: float = 300.0  # longest silence inside a healthy stream
    proxy_url: str | None = None
    connection_limit: int = 256


def create_session(settings: HttpSettings) -> aiohttp.ClientSession:
    """A pooled session; create it inside the running loop (the application lifespan)."""
    connector = aiohttp.TCPConnector(
        limit=settings.connection_limit, ttl_dns_cache=300, enable_cleanup_closed=True
    )
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.request_timeout,
        sock_connect=settings.request_timeout,
        sock_read=settings.idle_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        proxy=settings.proxy_url or None,
        auto_decompress=True,
        json_serialize=_orjson_dumps,
        raise_for_status=False,
    )


def _orjson_dumps(obj: Any) -> str:
    import orjson

    return orjson.dumps(obj).decode()


@contextlib.contextmanager
def map_aiohttp_errors(provider: str, credential_id: str | None = None) -> Iterator[None]:
    """Translate aiohttp/asyncio errors into the gateway's error tree; most specific first."""
    try:
        yield
    except (UpstreamStatusError, UpstreamTransportError, UpstreamProtocolError):
        raise
    except aiohttp.ServerTimeoutError as exc:  # also an asyncio.TimeoutError: keep it first
        raise UpstreamTimeout(_describe(provider, "timed out", exc), provider=provider, credential_id=credential_id) from exc
    except (aiohttp.ConnectionTimeoutError, asyncio.TimeoutError, TimeoutError) as exc:
        raise UpstreamTimeout(_describe(provider, "timed out", exc), provider=provider, credential_id=credential_id) from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamTransportError(_describe(provider, "unreachable", exc), provider=provider, credential_id=credential_id) from exc
    except aiohttp.InvalidURL as exc:
        raise UpstreamTransportError(_describe(provider, "has an invalid URL", exc), provider=provider, credential_id=credential_id) from exc
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamTransportError(_describe(provider, "broke off its response", exc), provider=provider, credential_id=credential_id) from exc
    except aiohttp.WSMessageTypeError as exc:  # a TypeError subclass; never expected on HTTP
        raise UpstreamProtocolError(_describe(provider, "sent an unexpected message", exc), provider=provider, credential_id=credential_id) from exc
    except aiohttp.ClientResponseError as exc:
        raise UpstreamProtocolError(_describe(provider, "sent a malformed response", exc), provider=provider, credential_id=credential_id) from exc
    except (aiohttp.ClientError, ConnectionError, OSError) as exc:
        raise UpstreamTransportError(_describe(provider, "connection failed", exc), provider=provider, credential_id=credential_id) from exc


def _describe(provider: str, what: str, exc: BaseException) -> str:
    detail = redact(str(exc)) or type(exc).__name__
    return f"{provider} upstream {what}: {detail}"


async def open_response(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    provider: str,
    credential_id: str | None,
    headers: Mapping[str, str],
    json_body: Any,
    first_byte_timeout: float,
) -> aiohttp.ClientResponse:
    """Send a request and wait (bounded) for the response headers; error statuses raise."""
    with map_aiohttp_errors(provider, credential_id):
        async with asyncio.timeout(first_byte_timeout):
            response = await session.request(method, url, headers=dict(headers), json=json_body)
        if response.status >= 400:
            try:
                async with asyncio.timeout(first_byte_timeout):
                    body = await response.text(errors="replace")
            finally:
                response.release()
            raise status_error(provider, response.status, body, response.headers, credential_id)
        return response


async def iter_body(
    response: aiohttp.ClientResponse, provider: str, credential_id: str | None
) -> AsyncIterator[bytes]:
    """The body as it arrives, errors translated; the response is always closed."""
    try:
        with map_aiohttp_errors(provider, credential_id):
            async for chunk in response.content.iter_any():
                yield chunk
    finally:
        response.close()


def status_error(
    provider: str,
    status: int,
    body: str,
    headers: Mapping[str, str],
    credential_id: str | None,
) -> UpstreamStatusError:
    excerpt = redact(_summarise_body(body))
    return UpstreamStatusError(
        f"{provider} upstream returned HTTP {status}: {excerpt}",
        provider=provider,
        status=status,
        body=body[:2000],
        retry_after=parse_retry_after(headers.get("Retry-After")),
        credential_id=credential_id,
    )


def _summarise_body(body: str) -> str:
    """The useful part of an error body: a JSON detail/message, or text without HTML."""
    import orjson

    text = body.strip()
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        if text.lstrip().lower().startswith(("<!doctype", "<html")):
            return "an HTML page (blocked by a firewall or not an API endpoint)"
        return text[:300] or "empty body"
    if isinstance(data, dict):
        for key in ("detail", "message", "error"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message", value)
            if value:
                return str(value)[:300]
    return text[:300]


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds, from either the delta-seconds or the HTTP-date form."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
