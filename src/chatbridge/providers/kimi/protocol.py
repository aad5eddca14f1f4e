"""Kimi's Connect chat request: endpoints, headers, and the one message a chat request carries.

The chat RPC takes one user `message` (../shared/protocols/kimi.md §3.2.2): a new chat gets the
whole history flattened into it; a continued chat (`chat_id` + `parent_id`, from a session) gets
only the new turn. Field names are protobuf snake_case, which Connect's JSON codec accepts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from chatbridge.core.types import ChatRequest, Message

DEFAULT_SCENARIO = "SCENARIO_K2D5"
SEARCH_TOOL = {"type": "TOOL_TYPE_SEARCH", "search": {}}
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/140.0.0.0 Safari/537.36"
)
_EFFORTS = {"minimal": "LOW", "low": "LOW", "medium": "MEDIUM", "high": "HIGH", "max": "MAX", "xhigh": "MAX"}


@dataclass(frozen=True, slots=True)
class KimiEndpoints:
    base: str  # KIMI_BASE_URL, without a trailing slash
    auth: str  # KIMI_AUTH_URL

    @property
    def chat(self) -> str:
        return f"{self.base}/apiv2/kimi.gateway.chat.v1.ChatService/Chat"

    @property
    def catalog(self) -> str:
        return f"{self.base}/apiv2/kimi.gateway.config.v1.ConfigService/GetAvailableModels"

    @property
    def register(self) -> str:
        return f"{self.base}/api/device/register"

    @property
    def refresh(self) -> str:
        return f"{self.auth}/api/account.gateway.v1.AuthService/RefreshToken"

    @property
    def legacy_refresh(self) -> str:
        return f"{self.base}/api/auth/token/refresh"

    @property
    def upload(self) -> str:
        return f"{self.base}/apiv2-files/file/upload"

    @property
    def parse_progress(self) -> str:
        return f"{self.base}/apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress"


@dataclass(frozen=True, slots=True)
class KimiIdentity:
    """The ids the web client sends with every call: device, session and user (traffic) ids."""

    device_id: str
    session_id: str
    user_id: str | None = None


def stable_digits(seed: str, digits: int = 19) -> str:
    """A number of `digits` digits derived from `seed` (a device id that stays the same per account)."""
    value = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    low = 10 ** (digits - 1)
    return str(low + value % (9 * low))


def identity_from_claims(claims: dict[str, object], seed: str) -> KimiIdentity:
    """Device, session and user ids from an access token's claims, else stable ones from `seed`."""
    device = claims.get("device_id")
    session = claims.get("ssid")
    user = claims.get("sub")
    return KimiIdentity(
        device_id=str(device) if isinstance(device, (str, int)) and str(device) else stable_digits(seed),
        session_id=str(session) if isinstance(session, (str, int)) and str(session) else stable_digits(seed + ":session"),
        user_id=user if isinstance(user, str) and user else None,
    )


def web_headers(endpoints: KimiEndpoints, identity: KimiIdentity) -> dict[str, str]:
    """What the web client sends with every call besides the token."""
    headers = {
        "Accept": "*/*",
        "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8",
        "Origin": endpoints.base,
        "Referer": f"{endpoints.base}/",
        "User-Agent": BROWSER_USER_AGENT,
        "X-Msh-Platform": "web",
        "X-Msh-Device-Id": identity.device_id,
        "X-Msh-Session-Id": identity.session_id,
        "X-Language": "zh-CN",
        "R-Timezone": "Asia/Shanghai",
    }
    if identity.user_id:
        headers["X-Traffic-Id"] = identity.user_id
    return headers


def chat_headers(endpoints: KimiEndpoints, identity: KimiIdentity, access_token: str) -> dict[str, str]:
    """Bearer and the `kimi-auth` cookie (both are sent by the web client), Connect streaming."""
    return {
        **web_headers(endpoints, identity),
        "Authorization": f"Bearer {access_token}",
        "Cookie": f"kimi-auth={access_token}",
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
    }


def unary_headers(endpoints: KimiEndpoints, identity: KimiIdentity, access_token: str | None) -> dict[str, str]:
    """A unary Connect call (plain JSON, no envelope)."""
    headers = {**web_headers(endpoints, identity), "Content-Type": "application/json", "Connect-Protocol-Version": "1"}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
        headers["Cookie"] = f"kimi-auth={access_token}"
    return headers


def chat_body(request: ChatRequest, text: str, files: list[str]) -> dict[str, Any]:
    """The chat RPC body for `request`, whose (already flattened) `text` and uploaded `files` form its one message."""
    options = request.route_options
    scenario = str(options.get("scenario") or DEFAULT_SCENARIO)
    thinking = bool(options.get("thinking", False))
    blocks: list[dict[str, Any]] = [{"message_id": "", "text": {"content": text}}]
    blocks += [{"file": {"id": file_id, "status": "PROCESS_STATUS_SUCCESS"}} for file_id in files]
    message: dict[str, Any] = {"role": "user", "blocks": blocks, "scenario": scenario}
    chat_options: dict[str, Any] = {"thinking": thinking}
    effort = _EFFORTS.get((request.reasoning_effort or "").lower())
    if thinking and effort:
        chat_options["reasoning_effort"] = f"REASONING_EFFORT_{effort}"
    if options.get("model"):
        chat_options["model"] = str(options["model"])
    body: dict[str, Any] = {
        "scenario": scenario,
        "tools": [SEARCH_TOOL] if options.get("search") else [],
        "message": message,
        "options": chat_options,
    }
    if request.conversation is not None:
        body["chat_id"] = request.conversation.chat_id
        message["parent_id"] = request.conversation.message_id
    return body


# --- the message text ----------------------------------------------------------------------------

_LABELS = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def message_text(messages: list[Message], image_labels: dict[int, list[str]] | None = None) -> str:
    """The one message a chat request carries: a lone user turn as it is, several turns labelled by role.

    `image_labels` maps a message index to the labels of its uploaded images (`[image 1]`), so
    the text says where each image belongs.
    """
    labels = image_labels or {}
    if len(messages) == 1 and messages[0].role == "user":
        return _with_images(messages[0].text, labels.get(0, []))
    parts = []
    for index, message in enumerate(messages):
        body = _with_images(_message_body(message), labels.get(index, []))
        if body:
            parts.append(f"{_label(message)}: {body}")
    return "\n\n".join(parts)


def _label(message: Message) -> str:
    label = _LABELS[message.role]
    if message.role == "tool" and message.tool_call_id:
        return f"tool ({message.tool_call_id})"
    return label


def _message_body(message: Message) -> str:
    text = message.text
    if message.tool_calls:
        calls = "\n".join(f"[called {c.name} with {c.arguments}]" for c in message.tool_calls)
        text = f"{text}\n{calls}".strip()
    return text


def _with_images(text: str, labels: list[str]) -> str:
    if not labels:
        return text
    return f"{text}\n{' '.join(labels)}".strip()


