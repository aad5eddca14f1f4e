"""Images into a Kimi chat: uploaded through the file service, then referenced as file blocks.

The flow of kimi.md §6.2: `POST {base}/apiv2-files/file/upload` (multipart, one `file` part)
answers `{"file": {"id": ...}}`; `GetFileParseProgress` is polled until the file is
`PROCESS_STATUS_SUCCESS`; the chat message then carries `{"file": {"id", "status"}}` next to
its text block. A failure names the part it was for.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from chatbridge.core.errors import UpstreamError, UpstreamProtocolError
from chatbridge.providers.http import map_aiohttp_errors, status_error
from chatbridge.providers.kimi.protocol import KimiEndpoints, KimiIdentity, unary_headers, web_headers
from chatbridge.providers.media import LoadedImage

_SUCCESS = "PROCESS_STATUS_SUCCESS"
_FAILED = ("PROCESS_STATUS_FAILED", "PROCESS_STATUS_FAILURE", "PROCESS_STATUS_ERROR")


async def upload_image(session: aiohttp.ClientSession, endpoints: KimiEndpoints, identity: KimiIdentity,
                       access_token: str, image: LoadedImage, where: str, *, provider: str,
                       credential_id: str | None, timeout: float) -> str:
    """The file id of `image` once Kimi has processed it; raises an `UpstreamError` naming `where`."""
    try:
        async with asyncio.timeout(timeout):
            file_id = await _upload(session, endpoints, identity, access_token, image, provider, credential_id)
            await _wait_processed(session, endpoints, identity, access_token, file_id, provider, credential_id)
            return file_id
    except TimeoutError:
        raise UpstreamError(f"{provider} upstream did not take the image {where} within {timeout:g} s",
                            provider=provider, credential_id=credential_id) from None
    except UpstreamError as exc:
        raise _about(exc, f"uploading the image {where} failed", credential_id) from None


def _about(error: UpstreamError, what: str, credential_id: str | None) -> UpstreamError:
    """`error` saying what failed, its kind and details kept (a challenge page stays one, a status its status)."""
    error.message = f"{what}: {error.message}"
    error.args = (error.message,)
    error.credential_id = credential_id
    return error


async def _upload(session: aiohttp.ClientSession, endpoints: KimiEndpoints, identity: KimiIdentity,
                  access_token: str, image: LoadedImage, provider: str, credential_id: str | None) -> str:
    form = aiohttp.FormData()
    form.add_field("file", image.data, filename=image.name, content_type=image.media_type)
    headers = {**web_headers(endpoints, identity), "Authorization": f"Bearer {access_token}",
               "Cookie": f"kimi-auth={access_token}", "Accept": "application/json, text/plain, */*"}
    data = await _json(session, "POST", endpoints.upload, headers, form, provider, credential_id)
    file = data.get("file") if isinstance(data.get("file"), dict) else data
    file_id = file.get("id") if isinstance(file, dict) else None
    if not isinstance(file_id, str) or not file_id:
        raise UpstreamProtocolError(f"{provider} upstream answered the upload without a file id", provider=provider,
                                    credential_id=credential_id)
    return file_id


async def _wait_processed(session: aiohttp.ClientSession, endpoints: KimiEndpoints, identity: KimiIdentity,
                          access_token: str, file_id: str, provider: str, credential_id: str | None) -> None:
    pause = 0.1
    headers = unary_headers(endpoints, identity, access_token)
    body = orjson.dumps({"file_ids": [file_id]})
    while True:
        data = await _json(session, "POST", endpoints.parse_progress, headers, body, provider, credential_id)
        progresses = data.get("progresses")
        status = None
        if isinstance(progresses, list):
            status = next((p.get("status") for p in progresses if isinstance(p, dict)
                           and p.get("fileId", p.get("file_id")) == file_id), None)
        if status == _SUCCESS:
            return
        if status in _FAILED:
            raise UpstreamError(f"{provider} upstream could not process the image ({status})", provider=provider,
                                credential_id=credential_id)
        await asyncio.sleep(pause)
        pause = min(1.0, pause * 2)


async def _json(session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], data: Any,
                provider: str, credential_id: str | None) -> dict[str, Any]:
    with map_aiohttp_errors(provider, credential_id):
        async with session.request(method, url, headers=headers, data=data, allow_redirects=False) as response:
            raw = await response.read()
            if response.status >= 300:
                raise status_error(provider, response.status, raw.decode("utf-8", "replace"), response.headers,
                                   credential_id)
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"{provider} upstream answered the file service with something other than JSON",
                                    provider=provider, credential_id=credential_id) from None
    if not isinstance(parsed, dict):
        raise UpstreamProtocolError(f"{provider} upstream answered the file service with unexpected JSON",
                                    provider=provider, credential_id=credential_id)
    return parsed
