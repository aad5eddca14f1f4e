"""Every aiohttp exception leaves the seam translated into the gateway's error tree."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import aiohttp.client_exceptions as client_exceptions
import pytest
from multidict import CIMultiDict

import chatbridge
from chatbridge.core.errors import (
    Failure,
    FailureKind,
    UpstreamChallenge,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRedirect,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamTransportError,
)
from chatbridge.providers.base import classify_http_error
from chatbridge.providers.http import map_aiohttp_errors, parse_retry_after, status_error


def _instance(cls: type[BaseException]) -> BaseException:
    """Build an instance of an aiohttp exception whatever its constructor wants."""
    from unittest import mock

    if issubclass(cls, client_exceptions.ClientResponseError):
        return cls(mock.Mock(real_url="http://x"), (), status=500, message="boom")
    if issubclass(cls, client_exceptions.ClientConnectorError):
        return cls(mock.Mock(host="x", port=1, ssl=False), OSError(111, "refused"))
    if cls.__name__ in ("InvalidURL", "InvalidUrlClientError", "InvalidUrlRedirectClientError", "NonHttpUrlClientError", "NonHttpUrlRedirectClientError"):
        return cls("not a url")
    if cls.__name__ == "ServerFingerprintMismatch":
        return cls(b"a", b"b", "x", 1)
    if cls.__name__ == "ServerDisconnectedError":
        return cls()
    for args in ((), ("x",), ("x", "y"), ("x", "y", "z")):
        try:
            return cls(*args)
        except TypeError:
            continue
    raise TypeError(f"no recipe for {cls.__name__}")


EXCEPTIONS = [
    getattr(client_exceptions, name)
    for name in client_exceptions.__all__
    if isinstance(getattr(client_exceptions, name), type) and issubclass(getattr(client_exceptions, name), BaseException)
]


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda c: c.__name__)
def test_every_aiohttp_exception_is_mapped(cls: type[BaseException]) -> None:
    try:
        exc = _instance(cls)
    except Exception as build_error:  # pragma: no cover - tells which class needs a recipe
        pytest.fail(f"cannot build {cls.__name__}: {build_error}")
    with pytest.raises(UpstreamError) as caught:
        with map_aiohttp_errors("k2think", "cred1"):
            raise exc
    assert caught.value.provider == "k2think"
    assert caught.value.credential_id == "cred1"
    assert caught.value.__cause__ is exc


def test_timeouts_become_upstream_timeout() -> None:
    for exc in (aiohttp.ServerTimeoutError("slow"), TimeoutError(), aiohttp.ConnectionTimeoutError("slow")):
        with pytest.raises(UpstreamTimeout):
            with map_aiohttp_errors("p"):
                raise exc


def test_kinds() -> None:
    with pytest.raises(UpstreamTransportError):
        with map_aiohttp_errors("p"):
            raise aiohttp.ClientPayloadError("cut")
    with pytest.raises(UpstreamProtocolError):
        with map_aiohttp_errors("p"):
            raise _instance(aiohttp.ClientResponseError)


def test_status_error_summarises_and_redacts() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IjEyMyJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    error = status_error("k2think", 401, f'{{"detail":"bad token {jwt}"}}', {"Retry-After": "7"}, None)
    assert error.status == 401 and error.retry_after == 7
    assert jwt not in error.message and "bad token" in error.message
    html = status_error("k2think", 405, "<!DOCTYPE html><html>blocked</html>", {}, None)
    assert "HTML page" in html.message


def test_retry_after_forms() -> None:
    assert parse_retry_after("12") == 12
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert parse_retry_after("soon") is None


def test_a_redirect_is_an_error_naming_where_it_led_without_its_query_or_credentials() -> None:
    error = status_error("kimi", 307, "", {"Location": "https://user:pw@www.kimi.com/apiv2/chat?token=abc"}, "c1")
    assert isinstance(error, UpstreamRedirect) and error.status == 307 and error.credential_id == "c1"
    assert "HTTP 307" in error.message and "https://www.kimi.com/apiv2/chat" in error.message
    assert "abc" not in error.message and "pw" not in error.message
    assert "no Location" in status_error("kimi", 302, "", {}, None).message
    failure = classify_http_error(error)  # the address is wrong, not the credential
    assert failure.kind is FailureKind.TRANSIENT and failure.scope == "provider"


CHALLENGE = ('<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title></head>'
             '<body>Enable JavaScript and cookies to continue</body></html>')


@pytest.mark.parametrize(("body", "headers"), [
    (CHALLENGE, {"Content-Type": "text/html; charset=UTF-8", "cf-mitigated": "challenge"}),
    (CHALLENGE, {}),  # an HTML page, whatever the headers say
    ("  <html><body>Access denied</body></html>", {"Content-Type": "application/octet-stream"}),
    ("Forbidden", {"content-type": "text/html"}),
    ("", {"CF-Mitigated": "challenge"}),
])
def test_a_403_challenge_page_is_a_challenge_that_blames_no_credential(body: str, headers: dict[str, str]) -> None:
    error = status_error("kimi", 403, body, headers, "c1")
    assert isinstance(error, UpstreamChallenge) and not isinstance(error, UpstreamStatusError)
    assert error.status == 403 and error.credential_id == "c1"
    assert error.message.startswith("kimi upstream answered with a firewall/bot challenge page (HTTP 403), not an API answer;")
    failure = classify_http_error(error)
    assert failure.kind is FailureKind.TRANSIENT and failure.scope == "provider"  # the pool judges no credential


@pytest.mark.parametrize(("status", "body", "headers"), [
    (401, CHALLENGE, {"Content-Type": "text/html"}),  # a 401 is about the credential, whatever its body
    (403, '{"code":"permission_denied","message":"forbidden"}', {"Content-Type": "application/json"}),
    (403, "forbidden", {}),
])
def test_a_401_and_a_403_from_the_api_itself_stay_auth_failures(status: int, body: str, headers: dict[str, str]) -> None:
    error = status_error("kimi", status, body, headers, "c1")
    assert type(error) is UpstreamStatusError
    failure = classify_http_error(error)
    assert failure.kind is FailureKind.AUTH and failure.scope == "credential"


def _classifiers() -> Iterator[tuple[str, Callable[[Exception], Failure]]]:
    """Every classifying function a provider module defines (`def classify...`); the providers' own
    `classify` methods are held to the same by the contract suite (`test_contract.py`)."""
    source = Path(chatbridge.__file__).parent / "providers"
    for module_path in sorted(source.rglob("*.py")):
        name = "chatbridge." + ".".join(module_path.relative_to(source.parent).with_suffix("").parts)
        for node in ast.parse(module_path.read_text(), str(module_path)).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("classify"):
                yield f"{name}:{node.name}", getattr(importlib.import_module(name), node.name)


def test_every_providers_classifier_blames_no_credential_for_a_challenge_page() -> None:
    """A classifier reading 403 as a refused credential before asking `classify_http_error` would disable
    accounts (and spend refresh tokens) whenever a firewall challenges the gateway."""
    error = status_error("p", 403, CHALLENGE, {"Content-Type": "text/html"}, "c1")
    found = dict(_classifiers())
    assert len(found) >= 3  # the shared one, Kimi's and Kiro's
    wrong = {where: failure for where, classify in found.items()
             if (failure := classify(error)).kind is not FailureKind.TRANSIENT or failure.scope != "provider"}
    assert wrong == {}


_HTTP_VERBS = {"request", "get", "post", "put", "patch", "delete", "head", "options"}


def _session_calls(tree: ast.AST) -> Iterator[ast.Call]:
    """Calls of an HTTP verb on something named like an aiohttp session (`session`, `self.session`, ...)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _HTTP_VERBS:
            receiver = ast.unparse(node.func.value)
            if "session" in receiver.lower():
                yield node


def test_no_upstream_call_follows_redirects() -> None:
    """A followed redirect sends the request (a 307 keeps the body: the conversation) wherever an
    upstream points, the cloud's metadata address included, and relays what answers there."""
    source = Path(chatbridge.__file__).parent
    calls, following = 0, []
    for module in sorted(source.rglob("*.py")):
        for call in _session_calls(ast.parse(module.read_text(), str(module))):
            calls += 1
            if not any(k.arg == "allow_redirects" and isinstance(k.value, ast.Constant) and k.value.value is False
                       for k in call.keywords):
                following.append(f"{module.relative_to(source)}:{call.lineno}")
    assert calls >= 9  # the scan sees the calls (every provider's, sign-ins, refreshes, model lists, media)
    assert following == []


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"retry-after-ms": "1500", "Retry-After": "7"}, 1.5),  # the finer one wins
    ({"x-ratelimit-reset-after": "2"}, 2.0),
    ({"Retry-After": "inf"}, None),  # not a time: the pool's default rest, never forever
    ({"Retry-After": "nan"}, None),
    ({"retry-after-ms": "-5"}, 0.0),
    ({"Retry-After": "99999999999"}, 7 * 86400.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past: now
    ({}, None),
])
def test_every_spelling_of_when_to_retry_is_read_and_bounded(headers: dict[str, str], expected: float | None) -> None:
    error = status_error("openai", 429, "{}", CIMultiDict(headers), None)
    assert error.retry_after == expected
