"""One reply streams per Kimi account at a time: the gateway queues its own requests, and waits out
(or goes around) an account that is busy with someone else's reply, without counting it as a failure."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from tests.harness import GatewayServer
from tests.upstreams import KimiEmulator, KimiReply

Start = Callable[..., GatewayServer]


def test_ten_concurrent_requests_on_one_account_never_stream_at_once_and_all_succeed(
        kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    kimi_emu.reply = KimiReply(text="一个不短的回答，分成几段发出。", thinking="想想")
    kimi_emu.chunk_delay = 0.02  # each reply takes a while, so they would overlap if allowed to
    gateway = kimi_gateway(request_timeout=30)

    def one(n: int) -> str:
        client = gateway.openai()
        if n % 2:
            chunks = client.chat.completions.create(model="kimi-thinking", messages=[{"role": "user", "content": f"#{n}"}],
                                                    stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        reply = client.chat.completions.create(model="kimi", messages=[{"role": "user", "content": f"#{n}"}])
        return str(reply.choices[0].message.content)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(one, range(10)))
    assert answers == ["一个不短的回答，分成几段发出。"] * 10
    assert kimi_emu.max_active == {"user-0": 1} and kimi_emu.busy_refusals == 0
    assert len(kimi_emu.chat_calls) == 10


def test_an_account_busy_with_another_clients_reply_is_waited_for_without_penalty(
        kimi_emu: KimiEmulator, kimi_gateway: Start) -> None:
    gateway = kimi_gateway(request_timeout=30)
    kimi_emu.hold_stream("user-0")  # the account's owner is chatting in the browser
    threading.Timer(1.0, kimi_emu.release_stream, args=("user-0",)).start()
    started = time.monotonic()
    reply = gateway.openai().chat.completions.create(model="kimi", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content and time.monotonic() - started >= 0.9
    assert kimi_emu.busy_refusals >= 1
    pool = gateway.runtime.pools["kimi"]
    [entry] = pool.entries
    assert entry.failures == 0 and not entry.disabled and entry.cooldown_until == 0
    assert "busy" in gateway.logs.text
