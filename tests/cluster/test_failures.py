"""The cluster when parts of it fail: Redis going away and coming back, a replica killed with -9."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx

from chatbridge.providers.kimi.source import account_id
from tests.upstreams import KimiReply

from .conftest import CLIENT_KEY, SLOT_TTL, Cluster, everywhere, wait_for
from .test_shared_state import ask, state_of


def delta_text(line: str) -> str:
    """The text an OpenAI SSE line carries ("" for anything else)."""
    if not line.startswith("data: {"):
        return ""
    choices = json.loads(line[6:]).get("choices") or [{}]
    return str(choices[0].get("delta", {}).get("content") or "")


def test_redis_stopped_mid_test_degrades_keeps_serving_and_converges_when_it_returns(start_cluster: Any) -> None:
    cluster: Cluster = start_cluster(kimi_accounts=2)
    client = cluster.openai()
    assert ask(client, [{"role": "user", "content": "开始"}])[0]
    assert all(cluster.health(n)["state"]["up"] for n in range(3))

    cluster.redis.kill()
    wait_for(lambda: [cluster.health(n)["status"] for n in range(3)], 10,
             "every replica's /health says degraded", until=everywhere("degraded"))
    for n in range(3):
        state = cluster.health(n)["state"]
        assert state["backend"] == "redis" and state["up"] is False and state["errors"] >= 1, state

    served = set()
    for n in range(6):  # still answered, at once: no replica waits on the dead server for each call
        started = time.monotonic()
        answer, raw = ask(client, [{"role": "user", "content": f"断开时{n}"}])
        assert answer and time.monotonic() - started < 5
        served.add(cluster.replica_of(raw))
    assert served == {0, 1, 2}
    # Made while Redis is down: a credential disabled through replica 0, a conversation started on some replica.
    stale = account_id(cluster.kimi_tokens[0])
    assert cluster.admin(0, "POST", f"/admin/pools/kimi/{stale}/disable").status_code == 200
    history = [{"role": "user", "content": "我叫李四，来自上海"}]
    # Started through replica 0, which knows the credential is disabled: the chat is on the other one
    # (replicas 1 and 2 could still pick the disabled one now, and its chat could not continue later).
    first, _ = ask(cluster.openai(base_url=cluster.replicas[0].base_url), history, user="li_si")
    started_on = 0
    assert cluster.kimi.chat_calls[-1].user == "user-1"

    cluster.redis.start()  # empty: it kept nothing (--save ''), so all it learns comes from the replicas
    wait_for(lambda: [cluster.health(n)["state"]["up"] for n in range(3)], 15, "every replica sees Redis again",
             until=everywhere(True))
    wait_for(lambda: [cluster.health(n)["status"] for n in range(3)], 5, "every replica's /health says ok",
             until=everywhere("ok"))
    wait_for(lambda: [state_of(cluster, n, stale) for n in range(3)], 10,
             "the credential disabled while Redis was down is disabled on every replica", until=everywhere("disabled"))

    before = len(cluster.kimi.chat_calls)
    for n in range(6):
        ask(client, [{"role": "user", "content": f"恢复后{n}"}])
    assert {c.user for c in cluster.kimi.chat_calls[before:]} == {"user-1"}
    other = (started_on + 1) % 3  # the conversation continues on another replica: it was not lost
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "我刚才说我来自哪里？"}]
    answer, _ = ask(cluster.openai(base_url=cluster.replicas[other].base_url), history, user="li_si")
    assert "上海" in answer
    last = cluster.kimi.chat_calls[-1]
    assert not last.new_chat and last.text == "我刚才说我来自哪里？"


def test_changes_after_redis_came_back_empty_still_reach_every_replica(start_cluster: Any) -> None:
    cluster: Cluster = start_cluster(kimi_accounts=2)
    credential = account_id(cluster.kimi_tokens[0])
    for action in ("disable", "enable", "disable", "enable"):  # the credential has a history on every replica
        assert cluster.admin(0, "POST", f"/admin/pools/kimi/{credential}/{action}").status_code == 200
        wanted = "disabled" if action == "disable" else "active"
        wait_for(lambda: [state_of(cluster, n, credential) for n in range(3)], 5,
                 f"every replica shows the credential {wanted}", until=everywhere(wanted))

    cluster.redis.kill()  # a restart without persistence: Redis comes back knowing nothing
    cluster.redis.start()
    wait_for(lambda: [cluster.health(n)["status"] for n in range(3)], 15, "every replica's /health says ok",
             until=everywhere("ok"))
    assert cluster.admin(1, "POST", f"/admin/pools/kimi/{credential}/disable").status_code == 200
    wait_for(lambda: [state_of(cluster, n, credential) for n in range(3)], 5,
             "a credential disabled through replica 1 after the restart is disabled on every replica",
             until=everywhere("disabled"))
    before = len(cluster.kimi.chat_calls)
    for n in range(6):
        ask(cluster.openai(), [{"role": "user", "content": f"重启后{n}"}])
    assert {c.user for c in cluster.kimi.chat_calls[before:]} == {"user-1"}


def test_a_replica_killed_while_streaming_frees_its_stream_slot_within_the_slot_ttl(start_cluster: Any) -> None:
    cluster: Cluster = start_cluster(KIMI_MAX_STREAMS_PER_ACCOUNT="1")
    cluster.kimi.reply = KimiReply(text="这是一个很长的回答，" * 20)
    cluster.kimi.chunks = 40
    cluster.kimi.chunk_delay = 0.3  # a reply of about fifteen seconds: it is still streaming when its replica dies
    streaming = threading.Event()

    def doomed() -> None:
        body = {"model": "kimi", "stream": True, "messages": [{"role": "user", "content": "长一点"}]}
        try:
            with httpx.stream("POST", cluster.replicas[0].base_url + "/v1/chat/completions", json=body, timeout=30,
                              headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as response:
                for line in response.iter_lines():
                    if delta_text(line):
                        streaming.set()
        except httpx.HTTPError:
            pass  # its replica is killed mid-stream

    reader = threading.Thread(target=doomed, daemon=True)
    reader.start()
    assert streaming.wait(20), "replica 0 never started streaming"
    cluster.replicas[0].kill()
    killed = time.monotonic()
    reader.join(10)
    cluster.kimi.reply = KimiReply(text="好的")
    cluster.kimi.chunk_delay = 0.0
    wait_for(lambda: not cluster.kimi._active.get("user-0"), 5, "Kimi sees the dead replica's stream closed")

    sent = time.monotonic()
    with httpx.stream("POST", cluster.replicas[1].base_url + "/v1/chat/completions", timeout=30,
                      json={"model": "kimi", "stream": True, "messages": [{"role": "user", "content": "接着"}]},
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as response:
        assert response.status_code == 200
        first_byte = None
        text = ""
        for line in response.iter_lines():
            piece = delta_text(line)
            if piece and first_byte is None:
                first_byte = time.monotonic()
            text += piece
    assert first_byte is not None and "好的" in text
    waited = first_byte - killed
    assert waited <= SLOT_TTL + 3, f"replica 1 waited {waited:.1f} s for a slot whose holder died (ttl {SLOT_TTL} s)"
    # The slot was really held for the dead replica: replica 1 waited for its expiry (a lease renewed at
    # least every ttl/2 outlives the kill by ttl/2 or more), never asking Kimi meanwhile. A cap counted
    # per process lets replica 1 stream at once (0.1-0.3 s here).
    assert first_byte - sent >= 1.0, f"replica 1 streamed {first_byte - sent:.2f} s after asking: no shared slot held"
    assert cluster.kimi.busy_refusals == 0
    # Through nginx the deployment still answers: the dead replica is passed over.
    for _ in range(3):
        assert ask(cluster.openai(), [{"role": "user", "content": "还在吗"}])[0]
