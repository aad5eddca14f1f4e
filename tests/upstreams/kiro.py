"""Kiro upstream emulator: `generateAssistantResponse` as a binary AWS event stream, and Kiro's logins.

What /work/shared/protocols/kiro.md describes, awkward parts included:

- chat at `/generateAssistantResponse`: the bearer must be a live access token (else 403
  "The bearer token included in the request is invalid."), or an API key with `tokentype:
  API_KEY`; `profileArn` is required; every "Improperly formed request" rule of the notes is
  enforced (`kiro_rules.py`); replayed thinking must carry a signature the emulator made;
- answers as real frames (`kiro_frames.py`): signed reasoning, text, tool-use fragments, the
  closing metering/context-usage events; optionally split at every byte boundary
  (`split_writes`), truncated (no closing events), cut off inside a frame, reset mid-stream
  (`break_mid_stream`), with a bad CRC, with an `exception` frame or an error (the `error` message
  type or the SDK's `error` event), or led by a `messageMetadataEvent` without token figures;
- social refresh at `/refreshToken` and IdC refresh at `/token` (JSON), an external IdP's OAuth
  refresh at `/oauth2/v2.0/token` (form-encoded, snake_case answers; its bearer needs `tokentype:
  EXTERNAL_IDP`), each rotating the refresh token and killing the old one (`invalid_grant`
  afterwards); `ListAvailableModels`; the profile lookup in every form the notes list: REST
  `POST /ListAvailableProfiles`, and JSON-RPC `POST /` with `x-amz-target`
  `AmazonCodeWhispererService.ListAvailableProfiles`, `.ListProfiles` or `.ListAvailableCustomizations`
  (anything else is AWS's 400 `UnknownOperationException`);
- helpers that write social, IdC and external-IdP token files the way the IDE does.

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
from .kiro_frames import KiroReply, error_event_frame, error_message_frame, event_frame, exception_frame, reply_frames
from .kiro_rules import NO_PROFILE, check_body

__all__ = ["CHAT_PATH", "DEFAULT_ARN", "KiroAccount", "KiroEmulator", "KiroReply"]

CHAT_PATH = "/generateAssistantResponse"
SOCIAL_REFRESH_PATH = "/refreshToken"
IDC_REFRESH_PATH = "/token"
EXTERNAL_REFRESH_PATH = "/oauth2/v2.0/token"
MODELS_PATH = "/ListAvailableModels"
PROFILES_PATH = "/ListAvailableProfiles"
DEFAULT_ARN = "arn:aws:codewhisperer:us-east-1:699475941385:profile/EHGA3GRVQMUK"
BEARER_INVALID = {"message": "The bearer token included in the request is invalid.", "reason": None}
INVALID_GRANT = {"error": "invalid_grant", "error_description": "Invalid refresh token provided"}
MODELS = ["claude-sonnet-4", "claude-sonnet-4.5", "claude-haiku-4.5", "claude-opus-4.5", "auto"]
# What Kiro serves besides (the notes' table 3.8 and the 2026 update); listed only when `catalog_extra` names them.
NEWER_MODELS = ["claude-sonnet-4.6", "claude-sonnet-5", "claude-opus-4.6", "claude-opus-4.7", "claude-opus-4.8",
                "claude-3.7-sonnet", "deepseek-3.2", "glm-5", "minimax-m2.1", "minimax-m2.5", "qwen3-coder-next"]
RPC_TARGETS = ("AmazonCodeWhispererService.ListAvailableProfiles", "AmazonCodeWhispererService.ListProfiles",
               "AmazonCodeWhispererService.ListAvailableCustomizations")
EVENT_STREAM = "application/vnd.amazon.eventstream"

Responder = Callable[[dict[str, Any]], KiroReply]


@dataclass
class KiroAccount:
    """One Kiro login: its live access token and refresh token (both rotate on refresh)."""

    kind: str  # "social", "idc" or "external_idp"
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
        self.models = list(MODELS)  # what the catalog lists (with `catalog_extra`)
        self.served = set(MODELS) | set(NEWER_MODELS)  # what chat takes, listed or not
        self.effort_models = {"claude-sonnet-4.6", "claude-opus-4.6"}  # models that take output_config.effort
        self.catalog_extra: list[dict[str, Any]] = []  # more ListAvailableModels entries
        self.catalog_fails = False
        self.catalog_needs_profile = False  # True: the catalog refuses a query without profileArn (400)
        self.profiles_listed = True  # ListAvailableProfiles names the account's profile
        self.profiles_rest = True  # False: only the older JSON-RPC form (POST / with x-amz-target) answers
        self.rpc_targets = set(RPC_TARGETS)  # the JSON-RPC operations that answer; others are unknown
        self.refresh_names_profile = True  # a social refresh answer carries profileArn
        self.rotate_refresh_tokens = True
        self.expires_in = 3600
        self.truncate = False  # leave out the closing events, as a cut-off stream does
        self.corrupt: str | None = None  # "prelude" or "message": a frame with a bad CRC
        self.corrupt_frame = 1  # which frame
        self.exception: tuple[str, str] | None = None  # (type, message): an exception frame ...
        self.exception_after = 0  # ... after this many events (for `error_frame` too)
        self.error_frame: tuple[str, str] | None = None  # ("message" | "event", text): an error after exception_after
        self.lead_metadata: str | None = None  # "messageMetadataEvent"/"metadataEvent" first, without tokenUsage
        self.cut_last_frame = False  # the body ends cleanly halfway through its last frame
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
        app.router.add_post(EXTERNAL_REFRESH_PATH, self._handle_external_refresh)
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
        elif kind == "external_idp":
            account.client_id = secrets.token_hex(16)
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

    def write_external_idp_file(self, path: Path, account: KiroAccount, *, expired: bool = False) -> Path:
        """An external-IdP login (Entra, Okta) as the IDE writes it: its token endpoint, issuer, client and scopes."""
        assert account.client_id
        return _write_json(path, {"accessToken": account.access_token, "refreshToken": account.refresh_token,
                                  "expiresAt": _iso(time.time() + (-600 if expired else 3000)),
                                  "authMethod": "external_idp", "provider": "ExternalIdp",
                                  "tokenEndpoint": self.url(EXTERNAL_REFRESH_PATH), "issuerUrl": self.base_url,
                                  "clientId": account.client_id, "scopes": ["openid", "offline_access"]})

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
        problem = check_body(recorded.json, set(self.models) | self.served | {m["modelId"] for m in self.catalog_extra},
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
        account = self.account_for(bearer)
        if account is None:
            return self.error_response(403, BEARER_INVALID)
        if account.kind == "external_idp" and request.headers.get("tokentype", "").upper() != "EXTERNAL_IDP":
            return self.error_response(403, BEARER_INVALID)
        return None

    def _frames(self, reply: KiroReply) -> list[bytes]:
        frames = reply_frames(reply, truncated=self.truncate or self.cut_last_frame)
        if self.lead_metadata is not None:
            frames.insert(0, event_frame(self.lead_metadata, {"conversationId": "c-1", "utteranceId": "u-1"}))
        if self.exception is not None:
            kind, message = self.exception
            frames = [*frames[:self.exception_after], exception_frame(kind, message)]
        if self.error_frame is not None:
            form, message = self.error_frame
            error = error_event_frame(message) if form == "event" else error_message_frame("InternalServerException", message)
            frames = [*frames[:self.exception_after], error]
        if self.cut_last_frame:
            frames[-1] = frames[-1][:len(frames[-1]) // 2]
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

    async def _handle_external_refresh(self, request: web.Request) -> web.StreamResponse:
        """OAuth's refresh grant as an IdP answers it: form-encoded in, snake_case out."""
        if request.content_type != "application/x-www-form-urlencoded":
            return self.error_response(400, {"error": "invalid_request", "error_description": "form-encoded body expected"})
        form = dict(await request.post())
        self.refresh_calls.append({"path": EXTERNAL_REFRESH_PATH, **form})
        if form.get("grant_type") != "refresh_token":
            return self.error_response(400, {"error": "unsupported_grant_type"})
        answer = self._refresh(form.get("refresh_token"), "external_idp", None, client_id=form.get("client_id"))
        if answer.status != 200:
            return answer
        data = json.loads(answer.body)  # type: ignore[arg-type]
        renamed = {"access_token": data["accessToken"], "expires_in": data["expiresIn"], "token_type": "Bearer"}
        if "refreshToken" in data:
            renamed["refresh_token"] = data["refreshToken"]
        return web.json_response(renamed)

    def _refresh(self, refresh_token: Any, kind: str, client: tuple[Any, Any] | None,
                 client_id: Any = None) -> web.Response:
        if self.refresh_failures:
            status = self.refresh_failures.pop(0)
            return self.error_response(status, INVALID_GRANT if status == 400 else {"message": "Service unavailable"})
        with self._refresh_lock:
            account = next((a for a in self.accounts if a.refresh_token == refresh_token and a.kind == kind), None)
            if account is None:
                return self.error_response(400, INVALID_GRANT)
            if client is not None and client != (account.client_id, account.client_secret):
                return self.error_response(400, {"error": "invalid_client", "error_description": "Invalid client"})
            if kind == "external_idp" and client_id != account.client_id:
                return self.error_response(400, {"error": "invalid_client", "error_description": "Invalid client"})
            account.access_token = _token("aoa")
            account.refreshes += 1
            if self.rotate_refresh_tokens:
                account.refresh_token = _token("aor")
                account.issued.append(account.refresh_token)
        answer: dict[str, Any] = {"accessToken": account.access_token, "expiresIn": self.expires_in}
        if self.rotate_refresh_tokens:
            answer["refreshToken"] = account.refresh_token
        if kind == "social" and self.refresh_names_profile:
            answer["profileArn"] = account.profile_arn
        else:
            answer["tokenType"] = "Bearer"
        return web.json_response(answer)

    # -- catalog and profiles --------------------------------------------------------------------

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        denied = self._auth(request, _bearer(request))
        if self.catalog_fails or denied is not None:
            return denied or self.error_response(403, BEARER_INVALID)
        if self.catalog_needs_profile and not request.query.get("profileArn", "").startswith("arn:"):
            return self.error_response(400, NO_PROFILE)
        entries = [{"modelId": m, "modelName": m} for m in self.models] + self.catalog_extra
        return web.json_response({"models": entries, "defaultModel": {"modelId": "auto"}})

    async def _handle_json_rpc(self, request: web.Request) -> web.StreamResponse:
        """AWS JSON-RPC on `/`: the operation is `x-amz-target`; one the service lacks is its 400."""
        target = request.headers.get("x-amz-target", "")
        if target not in self.rpc_targets:
            await self.record(request)
            return self.error_response(400, {"__type": "com.amazon.coral.service#UnknownOperationException"})
        if target.endswith(".ListAvailableCustomizations"):
            return await self._profiles(request, customizations=True)
        return await self._profiles(request)

    async def _handle_profiles(self, request: web.Request) -> web.StreamResponse:
        if not self.profiles_rest:
            await self.record(request)
            return self.error_response(404, {"message": "Not Found"})
        return await self._profiles(request)

    async def _profiles(self, request: web.Request, *, customizations: bool = False) -> web.StreamResponse:
        await self.record(request)
        bearer = _bearer(request)
        denied = self._auth(request, bearer)
        if denied is not None:
            return denied
        account = self.account_for(bearer)
        arn = account.profile_arn if account is not None else DEFAULT_ARN
        if customizations:  # CP reads the answer's `profileArn`; a customization's own ARN is no profile
            listed = [{"arn": arn.replace(":profile/", ":customization/"), "name": "default"}]
            return web.json_response({"customizations": listed, **({"profileArn": arn} if self.profiles_listed else {})})
        if not self.profiles_listed:
            return web.json_response({"profiles": []})
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
