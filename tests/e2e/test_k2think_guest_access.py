"""Guest mode against every way K2Think's guest endpoint has been seen to want its clients (notes §1.3, question 9).

No authentication, any bearer, a guest JWT from `/api/guest/token`, or the cookie handshake with a
`conversation_id` per chat: the gateway sends plain requests until one is refused, then learns what
the endpoint wants once and keeps it.
"""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator
from tests.upstreams.k2think import GUEST_CHAT_PATH, GUEST_NEW_CHAT_PATH, GUEST_TOKEN_PATH

MODEL = "MBZUAI-IFM/K2-Think-v2"
HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("mode", ["none", "bearer", "token", "handshake"])
def test_guest_mode_answers_whatever_the_guest_endpoint_wants(
        k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], mode: str) -> None:
    k2emu.guest_auth = mode
    client = k2_gateway(guest=True).openai()
    for stream in (False, True, False):
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in
                           client.chat.completions.create(model=MODEL, messages=HI, stream=True) if c.choices)  # type: ignore[arg-type]
        else:
            text = client.chat.completions.create(model=MODEL, messages=HI).choices[0].message.content or ""  # type: ignore[arg-type]
        assert text == "Hello! How can I help you today?"
    chats = k2emu.requests_to(GUEST_CHAT_PATH)
    # Plain until refused; then one handshake, kept for the requests after it.
    assert len(chats) == (3 if mode == "none" else 4)
    assert k2emu.guest_page_visits == (0 if mode == "none" else 1)
    if mode == "token":
        assert len(k2emu.requests_to(GUEST_TOKEN_PATH)) == 1
        assert all(c.headers["Authorization"].startswith("Bearer guest.") for c in chats[1:])
    if mode == "handshake":
        assert len(k2emu.requests_to(GUEST_NEW_CHAT_PATH)) == 1 + 3  # the handshake's own, then one per chat
        conversations = [c.json["conversation_id"] for c in chats[1:]]
        assert len(set(conversations)) == 3 and "guest_conversation_count=1" in chats[1].headers["Cookie"]
        assert "Authorization" not in chats[1].headers


def test_a_pass_that_is_refused_in_turn_is_learnt_again(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.guest_auth = "token"
    client = k2_gateway(guest=True).openai()
    client.chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    k2emu._guest_tokens.clear()  # the upstream forgot the guest token it gave
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    assert refused.value.status_code == 502 and refused.value.code == "guest_access_refused"
    assert client.chat.completions.create(model=MODEL, messages=HI).choices[0].message.content  # type: ignore[arg-type]
    assert len(k2emu.requests_to(GUEST_TOKEN_PATH)) == 2


def test_a_guest_endpoint_that_refuses_everything_is_guest_access_refused(
        k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.guest_auth = "token"
    k2emu.fail_next(10, status=401)  # no handshake can help
    client = k2_gateway(guest=True).openai()
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
        assert refused.value.code == "guest_access_refused"
    # The first request: plain, then with the pass; the next ones plain only, with no handshake each time.
    assert len(k2emu.requests_to(GUEST_CHAT_PATH)) == 2 + 2 and k2emu.guest_page_visits == 1
