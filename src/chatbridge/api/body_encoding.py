"""Request bodies sent with a `Content-Encoding`: gzip and deflate decoded, bounded, others refused.

A compressed body is decoded with the same byte limit as a plain one, applied to what it
decodes to, so a small gzip bomb costs the limit and no more. An encoding the gateway cannot
decode is a 415 naming it, never a misleading "not valid JSON".
"""

from __future__ import annotations

import zlib

from chatbridge.core.errors import ClientError, InvalidRequest, RequestTooLarge

_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
_RAW_DEFLATE = -zlib.MAX_WBITS
_WBITS: dict[bytes, tuple[int, ...]] = {
    b"gzip": (_GZIP,),
    b"x-gzip": (_GZIP,),
    b"deflate": (_ZLIB, _RAW_DEFLATE),  # RFC 9110 means zlib-wrapped; some clients send it raw
}


class UnsupportedContentEncoding(ClientError):
    status = 415

    def __init__(self, encoding: str) -> None:
        shown = encoding if len(encoding) <= 40 else encoding[:40] + "…"
        super().__init__(f"Content-Encoding '{shown}' is not supported: send the body as is, gzip or deflate.",
                         code="unsupported_content_encoding")


def decode_body(body: bytes, encoding: bytes, limit: int) -> bytes:
    """`body` as sent before `encoding` was applied, at most `limit` bytes of it."""
    name = encoding.strip().lower()
    if name in (b"", b"identity"):
        return body
    tries = _WBITS.get(name)
    if tries is None:
        raise UnsupportedContentEncoding(encoding.decode("latin-1"))
    for wbits in tries:
        decoder = zlib.decompressobj(wbits)
        try:
            decoded = decoder.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(decoded) > limit:
            raise RequestTooLarge(limit)
        if decoder.eof and not decoder.unused_data:
            return decoded
    raise InvalidRequest(f"The request body is not valid {name.decode('latin-1')} data.", code="invalid_body_encoding")
