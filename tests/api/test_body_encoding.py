"""`decode_body`: what a compressed request body decodes to, within the limit, or which error."""

from __future__ import annotations

import gzip
import zlib

import pytest

from chatbridge.api.body_encoding import UnsupportedContentEncoding, decode_body
from chatbridge.core.errors import InvalidRequest, RequestTooLarge

BODY = b'{"model": "m", "messages": []}'


@pytest.mark.parametrize("encoding", [b"gzip", b"GZip", b" x-gzip "])
def test_gzip_by_any_of_its_names_and_cases(encoding: bytes) -> None:
    assert decode_body(gzip.compress(BODY), encoding, 1000) == BODY


def test_identity_and_an_empty_value_leave_the_body_as_it_came() -> None:
    assert decode_body(BODY, b"identity", 1000) == decode_body(BODY, b"", 1000) == BODY


def test_the_limit_applies_to_what_the_body_decodes_to() -> None:
    assert decode_body(gzip.compress(b"a" * 1000), b"gzip", 1000) == b"a" * 1000
    with pytest.raises(RequestTooLarge):
        decode_body(gzip.compress(b"a" * 1001), b"gzip", 1000)


@pytest.mark.parametrize("content", [b"", gzip.compress(BODY)[:-6], gzip.compress(BODY) + b"trailing", b"plain"])
def test_a_truncated_padded_or_plain_body_is_not_gzip(content: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_body(content, b"gzip", 1000)


def test_deflate_zlib_wrapped_or_raw() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode_body(zlib.compress(BODY), b"deflate", 1000) == BODY
    assert decode_body(raw.compress(BODY) + raw.flush(), b"deflate", 1000) == BODY


@pytest.mark.parametrize("encoding", [b"br", b"zstd", b"gzip, br", b"compress"])
def test_other_encodings_are_refused_by_name(encoding: bytes) -> None:
    with pytest.raises(UnsupportedContentEncoding) as refused:
        decode_body(BODY, encoding, 1000)
    assert refused.value.status == 415 and encoding.decode() in refused.value.message
