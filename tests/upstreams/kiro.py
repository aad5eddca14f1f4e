"""Kiro upstream emulator: `generateAssistantResponse` as a binary AWS event stream, and Kiro's logins.

What /work/shared/protocols/kiro.md describes, awkward parts included:

- chat at `/generateAssistantResponse`: the bearer must be a live access token (else 403
  "The bearer token included in the request is invalid."), or an API key with `tokentype:
  API_KEY`; `profileArn` is required; every "Improperly formed request" rule of the notes is
  enforced (`kiro_rules.py`); replayed thinking must carry a signature the emulator made;
- answers as real frames (`kiro_frames.py`): signed reasoning, text, tool-use fragments, the
  closing metering/context-usage events; optionally split at every byte boundary
  (`split_writes`), truncated (no closing events), with a bad CRC, or with an `exception` frame;
- social refresh at `/refreshToken` and IdC refresh at `/token`, rotating the refresh token and
  killing the old one (`invalid_grant` afterwards); `ListAvailableModels`, `ListAvailableProfiles`;
- helpers that write social and IdC token files the way the IDE does.

Run standalone: ``python -m tests.upstreams.kiro --port N`` (prints a social token file's path).
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .common import EmulatorBase
from .kiro_frames import KiroReply, exception_frame, reply_frames
from .kiro_rules import check_body

__all__ = ["CHAT_PATH", "DEFAULT_ARN", "KiroAccount", "KiroEmulator", "KiroReply"]

CHAT_PATH = "/generateAssistantResponse"
SOCIAL_REFRESH_PATH = "/refreshToken"
IDC_REFRESH_PATH = "/token"
MODELS_PATH = "/ListAvailableModels"
PROFILES_PATH = "/ListAvailableProfiles"
DEFAULT_ARN = "arn:aws:codewhisperer:us-east-1:699475941385:profile/EHGA3GRVQMUK"
BEARER_INVALID = {"message": "The bearer token included in the request is invalid.", "reason": None}
INVALID_GRANT = {"error": "invalid_grant", "error_description": "Invalid refresh token provided"}
MODELS = ["claude-sonnet-4", "claude-sonnet-4.5", "claude-haiku-4.5", "claude-opus-4.5", "auto"]
EVENT_STREAM = "application/vnd.amazon.eventstream"

Responder = Callable[[dict[str, Any]], KiroReply]


@dataclass
class KiroAccount:
    """One Kiro login: its live access token and refresh token (both rotate on refresh)."""

    kind: str  # "social" or "idc"
    access_token: str
    refresh_token: str
    profile_arn: str = DEFAULT_ARN
    client_id: str | None = None
    client_secret: str | None = None
    refreshes: int = 0
    issued: list[str] = field(default_factory=list)  # every refresh token it was given, oldest first


def _token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(96)  # Kiro's tokens are long, opaque strings


class KiroEmulator(EmulatorBase):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.accounts: list[KiroAccount] = []
        self.api_keys: set[str] = set()
        self.reply = KiroReply()
        self.responder: Responder | None = None
        self.models = list(MODELS)
        self.effort_models = {"claude-sonnet-4.6", "claude-opus-4.6"}  # models that take output_config.effort
        self.catalog_extra: list[dict[str, Any]] = []  # more ListAvailableModels entries
        self.catalog_fails = False
        self.profiles_listed = True  # ListAvailableProfiles names the account's profile
        self.profiles_rest = True  # False: only the older JSON-RPC form (POST / with x-amz-target) answers
        self.rotate_refresh_tokens = True
        self.expires_in = 3600
        self.truncate = False  # leave out the closing events, as a cut-off stream does
        self.corrupt: str | None = None  # "prelude" or "message": a frame with a bad CRC
        self.corrupt_frame = 1  # which frame
        self.exception: tuple[str, str] | None = None  # (type, message): an exception frame ...
        self.exception_after = 0  # ... after this many events
        self.refresh_failures: list[int] = []  # statuses the next refresh calls answer with
        self.rejections: list[str] = []  # the rule each refused chat request broke
        self.refresh_calls: list[dict[str, Any]] = []
        self._refresh_lock = threading.Lock()

    # -- app -------------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(CHAT_PATH, self.guard(self._handle_chat))
        app.router.add_post(SOCIAL_REFRESH_PATH, self._handle_social_refresh)
        app.router.add_post(IDC_REFRESH_PATH, self._handle_idc_refresh)
        app.router.add_get(MODELS_PATH, self._handle_models)
        app.router.add_post(PROFILES_PATH, self._handle_profiles)
        app.router.add_post("/", self._handle_json_rpc)
        return app

    def default_error_body(self, status: int) -> Any:
        if status == 429:
            return {"message": "Rate exceeded.", "reason": "USER_REQUEST_RATE_EXCEEDED"}
        if status >= 500:
            return {"message": "Encountered an unexpected error when processing the request, please try again."}
        return {"message": f"HTTP {status}"}

    # -- accounts and token files ---------------------------------------------------------------

    def add_account(self, kind: str = "social", *, profile_arn: str = DEFAULT_ARN) -> KiroAccount:
        account = KiroAccount(kind, _token("aoa"), _token("aor"), profile_arn)
        account.issued.append(account.refresh_token)
        if kind == "idc":
            account.client_id, account.client_secret = _token("cid")[:40], _token("csecret")
        with self._lock:
            self.accounts.append(account)
        return account

    def add_api_key(self) -> str:
        key = "ksk_" + secrets.token_urlsafe(40)
        self.api_keys.add(key)
        return key

    def expire(self, account: KiroAccount) -> None:
        """The account's access token stops working (its hour is up): 403 until it is refreshed."""
        account.access_token = _token("aoa-expired")

    def write_social_file(self, path: Path, account: KiroAccount, *, expired: bool = False,
                          with_arn: bool = True) -> Path:
        data: dict[str, Any] = {"accessToken": account.access_token, "refreshToken": account.refresh_token,
                                "expiresAt": _iso(time.time() + (-600 if expired else 3000)),
                                "authMethod": "social", "provider": "Google"}
        if with_arn:
            data["profileArn"] = account.profile_arn
        return _write_json(path, data)

    def write_idc_files(self, path: Path, account: KiroAccount, *, expired: bool = False) -> Path:
        """The IdC token file and the `<clientIdHash>.json` registration beside it."""
        assert account.client_id and account.client_secret
        client_hash = secrets.token_hex(20)
        _write_json(path.parent / f"{client_hash}.json", {"clientId": account.client_id, "clientSecret": account.client_secret,
                                                          "expiresAt": _iso(time.time() + 86400 * 60)})
        return _write_json(path, {"accessToken": account.access_token, "refreshToken": account.refresh_token,
                                  "expiresAt": _iso(time.time() + (-600 if expired else 3000)),
                                  "clientIdHash": client_hash, "authMethod": "IdC", "provider": "BuilderId",
                                  "region": "us-east-1"})

    def account_for(self, bearer: str | None) -> KiroAccount | None:
        with self._lock:
            return next((a for a in self.accounts if a.access_token == bearer), None)

    @property
    def chat_requests(self) -> list[Any]:
        return self.requests_to(CHAT_PATH)

    # -- chat ------------------------------------------------------------------------------------

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        await self.wait_first_byte()
        bearer = _bearer(request)
        recorded.token = bearer
        failure = self.take_failure()
        if failure is not None:
            return self.failure_response(failure)
        denied = self._auth(request, bearer)
        if denied is not None:
            return denied
        problem = check_body(recorded.json, set(self.models) | {m["modelId"] for m in self.catalog_extra},
                             self.effort_models)
        if problem is not None:
            status, body, rule = problem
            with self._lock:
                self.rejections.append(rule)
            return self.error_response(status, body)
        reply = self.responder(recorded.json) if self.responder is not None else self.reply
        return await self.send_stream(request, self._frames(reply), self.stream_settings(), EVENT_STREAM)

    def _auth(self, request: web.Request, bearer: str | None) -> web.Response | None:
        if bearer in self.api_keys:
            if request.headers.get("tokentype", "").upper() != "API_KEY":
                return self.error_response(403, BEARER_INVALID)
            return None
        if self.account_for(bearer) is None:
            return self.error_response(403, BEARER_INVALID)
        return None

    def _frames(self, reply: KiroReply) -> list[bytes]:
        frames = reply_frames(reply, truncated=self.truncate)
        if self.exception is not None:
            kind, message = self.exception
            frames = [*frames[:self.exception_after], exception_frame(kind, message)]
        if self.corrupt is not None and self.corrupt_frame < len(frames):
            frame = bytearray(frames[self.corrupt_frame])
            frame[11 if self.corrupt == "prelude" else -1] ^= 1  # the last byte of that CRC
            frames[self.corrupt_frame] = bytes(frame)
        return frames

    # -- refresh ---------------------------------------------------------------------------------

    async def _handle_social_refresh(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.refresh_calls.append({"path": SOCIAL_REFRESH_PATH, **body})
        return self._refresh(body.get("refreshToken"), "social", None)

    async def _handle_idc_refresh(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.refresh_calls.append({"path": IDC_REFRESH_PATH, **body})
        if body.get("grantType") != "refresh_token":
            return self.error_response(400, {"error": "unsupported_grant_type"})
        return self._refresh(body.get("refreshToken"), "idc", (body.get("clientId"), body.get("clientSecret")))

    def _refresh(self, refresh_token: Any, kind: str, client: tuple[Any, Any] | None) -> web.Response:
        if self.refresh_failures:
            status = self.refresh_failures.pop(0)
            return self.error_response(status, INVALID_GRANT if status == 400 else {"message": "Service unavailable"})
        with self._refresh_lock:
            account = next((a for a in self.accounts if a.refresh_token == refresh_token and a.kind == kind), None)
            if account is None:
                return self.error_response(400, INVALID_GRANT)
            if client is not None and client != (account.client_id, account.client_secret):
                return self.error_response(400, {"error": "invalid_client", "error_description": "Invalid client"})
            account.access_token = _token("aoa")
            account.refreshes += 1
            if self.rotate_refresh_tokens:
                account.refresh_token = _token("aor")
                account.issued.append(account.refresh_token)
        answer: dict[str, Any] = {"accessToken": account.access_token, "expiresIn": self.expires_in}
        if self.rotate_refresh_tokens:
            answer["refreshToken"] = account.refresh_token
        if kind == "social":
            answer["profileArn"] = account.profile_arn
        else:
            answer["tokenType"] = "Bearer"
        return web.json_response(answer)

    # -- catalog and profiles --------------------------------------------------------------------

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        if self.catalog_fails or (self.account_for(_bearer(request)) is None and _bearer(request) not in self.api_keys):
            return self.error_response(403, BEARER_INVALID)
        entries = [{"modelId": m, "modelName": m} for m in self.models] + self.catalog_extra
        return web.json_response({"models": entries, "defaultModel": {"modelId": "auto"}})

    async def _handle_json_rpc(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-amz-target") != "AmazonCodeWhispererService.ListAvailableProfiles":
            await self.record(request)
            return self.error_response(400, {"__type": "UnknownOperationException"})
        return await self._profiles(request)

    async def _handle_profiles(self, request: web.Request) -> web.StreamResponse:
        if not self.profiles_rest:
            await self.record(request)
            return self.error_response(404, {"message": "Not Found"})
        return await self._profiles(request)

    async def _profiles(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        bearer = _bearer(request)
        account = self.account_for(bearer)
        if account is None and bearer not in self.api_keys:
            return self.error_response(403, BEARER_INVALID)
        if not self.profiles_listed:
            return web.json_response({"profiles": []})
        arn = account.profile_arn if account is not None else DEFAULT_ARN
        return web.json_response({"profiles": [{"arn": arn, "profileName": "KiroProfile-us-east-1"}]})


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    emulator = KiroEmulator(port=args.port)
    url = emulator.start()
    token_file = emulator.write_social_file(Path(tempfile.mkdtemp()) / "kiro-auth-token.json", emulator.add_account())
    print(f"Kiro emulator on {url}; token file {token_file}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        emulator.stop()


if __name__ == "__main__":
    main()
