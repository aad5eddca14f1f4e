"""K2Think request building: headers and body for the token and guest endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatbridge.core.types import ChatRequest, ImagePart, Message, TextPart

BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/140.0.0.0 Safari/537.36 Edg/140.0.0.0"
)


@dataclass(frozen=True, slots=True)
class K2ThinkEndpoints:
    base_url: str
    chat_url: str
    guest_url: str
    signin_url: str

    @property
    def origin(self) -> str:
        return self.base_url.rstrip("/")


def token_headers(endpoints: K2ThinkEndpoints, jwt: str) -> dict[str, str]:
    """Bearer plus the `token` cookie: the WAF in front of K2Think wants the cookie."""
    return {
        "Authorization": f"Bearer {jwt}",
        "Cookie": f"token={jwt}",
        **_browser_headers(endpoints, f"{endpoints.origin}/"),
    }


def guest_headers(endpoints: K2ThinkEndpoints) -> dict[str, str]:
    return _browser_headers(endpoints, f"{endpoints.origin}/guest")


def _browser_headers(endpoints: K2ThinkEndpoints, referer: str) -> dict[str, str]:
    return {
        "Accept": "text/event-stream, application/json",
        "Accept-Encoding": "gzip, deflate",
        "Content-Type": "application/json",
        "Origin": endpoints.origin,
        "Referer": referer,
        "User-Agent": BROWSER_USER_AGENT,
        "Accept-Language": "en-US,en;q=0.9",
    }


# Sampling parameters sent at the top level as well as in `params` (notes §1.4, §9.7: clients put them
# in either place). Open WebUI copies `params` over the top level (the same values, so both agree); these
# are the ones it maps in every version, `top_k` (not an OpenAI field, which an OpenAI-style backend may
# refuse) stays in `params` only.
TOP_LEVEL_PARAMS = ("temperature", "max_tokens", "top_p", "stop")


def build_body(request: ChatRequest, *, guest: bool) -> dict[str, Any]:
    """Open WebUI chat body without chat_id/id/session_id, so the upstream really streams."""
    params = sampling_params(request)
    body: dict[str, Any] = {
        "stream": True,
        "model": request.model,
        "messages": [encode_message(m) for m in request.messages],
        **{name: params[name] for name in TOP_LEVEL_PARAMS if name in params},
        "params": params,
        "features": {"image_generation": False, "code_interpreter": False, "web_search": False},
    }
    if not guest:
        body["tool_servers"] = []
        body["background_tasks"] = {"title_generation": False, "tags_generation": False}
    return body


def sampling_params(request: ChatRequest) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.max_tokens is not None:
        params["max_tokens"] = request.max_tokens
    if request.top_p is not None:
        params["top_p"] = request.top_p
    if request.top_k is not None:
        params["top_k"] = request.top_k
    if request.stop:
        params["stop"] = list(request.stop)
    return params


def encode_message(message: Message) -> dict[str, Any]:
    """Roles K2Think knows; tool traffic that reaches here unrewritten is kept as text."""
    role = "system" if message.role == "developer" else message.role
    if role == "tool":
        label = f"Result of tool call {message.tool_call_id or ''}".strip()
        if message.name:
            label += f" ({message.name})"
        if message.is_error:
            label += ", which failed"
        return {"role": "user", "content": f"{label}:\n{message.text}"}
    content = _encode_content(message)
    if message.role == "assistant" and message.tool_calls:
        calls = "\n".join(f"[called {c.name} with {c.arguments}]" for c in message.tool_calls)
        content = f"{content}\n{calls}".strip() if isinstance(content, str) else content
    return {"role": role, "content": content}


def _encode_content(message: Message) -> str | list[dict[str, Any]]:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    if not message.has_images:
        return "".join(p.text for p in message.content if isinstance(p, TextPart))
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            image: dict[str, Any] = {"url": part.url}
            if part.detail:
                image["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": image})
    return parts
