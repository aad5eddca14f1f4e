"""What one replica learns, the others know: sessions, credential health, stream caps, refreshes.

Each test goes through nginx with the official SDKs (admin calls pinned to one replica's own port)
and checks, from nginx's X-Upstream-Addr and the emulator's own records, that the behaviour held
across replicas rather than inside one.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chatbridge.providers.kimi.source import account_id
from tests.upstreams import KimiReply

from .conftest import Cluster, everywhere, wait_for

Start = Any  # the start_cluster factory


def ask(client: Any, messages: list[dict[str, str]], **options: Any) -> tuple[str, Any]:
    """A non-streamed completion: (its text, the raw response with nginx's headers)."""
    raw = client.chat.completions.with_raw_response.create(model=options.pop("model", "kimi"), messages=messages,
                                                          **options)
    return str(raw.parse().choices[0].message.content), raw


def stream(client: Any, messages: list[dict[str, str]], **options: Any) -> tuple[str, Any]:
    """A streamed completion read to its end: (its text, the raw response)."""
    with client.chat.completions.with_streaming_response.create(
            model=options.pop("model", "kimi"), messages=messages, stream=True, **options) as raw:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    return text, raw


def test_a_kimi_conversation_started_on_one_replica_continues_on_the_others(start_cluster: Start) -> None:
    cluster: Cluster = start_cluster()
    client = cluster.openai()
    history = [{"role": "user", "content": "我叫张三，来自北京"}]
    served = []
    for turn, follow_up in enumerate(["我喜欢喝茶", "我刚才说我来自哪里？"]):
        answer, raw = ask(client, history, user="zhang_san_001") if turn == 0 else stream(client, history,
                                                                                          user="zhang_san_001")
        served.append(cluster.replica_of(raw))
        history += [{"role": "assistant", "content": answer}, {"role": "user", "content": follow_up}]
    answer, raw = ask(client, history, user="zhang_san_001")
    served.append(cluster.replica_of(raw))
    assert sorted(served) == [0, 1, 2], f"nginx sent the three turns to replicas {served}"
    assert "北京" in answer  # the upstream chat remembers the first turn, sent through another replica
    calls = cluster.kimi.chat_calls
    assert [c.new_chat for c in calls] == [True, False, False]
    assert len({c.chat_id for c in calls}) == 1
    assert [c.text for c in calls] == ["我叫张三，来自北京", "我喜欢喝茶", "我刚才说我来自哪里？"]  # only the new turns


def state_of(cluster: Cluster, replica: int, credential: str) -> str:
    return str(next(c for c in cluster.credentials(replica) if c["id"] == credential)["state"])


def test_a_credential_disabled_through_one_replica_is_skipped_by_all(start_cluster: Start) -> None:
    cluster: Cluster = start_cluster(kimi_accounts=2)
    first, second = (account_id(t) for t in cluster.kimi_tokens)
    done = cluster.admin(0, "POST", f"/admin/pools/kimi/{first}/disable")
    assert done.status_code == 200, done.text
    wait_for(lambda: [state_of(cluster, n, first) for n in (1, 2)], 3,
             "replicas 1 and 2 show the credential disabled through replica 0", until=everywhere("disabled"))
    client = cluster.openai()
    served = {cluster.replica_of(ask(client, [{"role": "user", "content": f"第{n}个问题"}])[1]) for n in range(6)}
    assert served == {0, 1, 2}
    assert {c.user for c in cluster.kimi.chat_calls} == {"user-1"}  # every replica used only the other account
    assert all(state_of(cluster, n, second) == "active" for n in range(3))


def test_a_revoked_account_seen_by_one_replica_is_skipped_by_all(start_cluster: Start) -> None:
    cluster: Cluster = start_cluster(kimi_accounts=2)
    client = cluster.openai()
    for n in range(3):  # every replica has served, so each holds both accounts' access tokens
        ask(client, [{"role": "user", "content": f"热身{n}"}])
    with cluster.kimi._lock:  # the account's owner logged out everywhere: both its tokens die upstream
        cluster.kimi._refresh = {t: u for t, u in cluster.kimi._refresh.items() if u != "user-0"}
        cluster.kimi._access = {t: u for t, u in cluster.kimi._access.items() if u != "user-0"}
    pinned = cluster.openai(base_url=cluster.replicas[0].base_url)
    for n in range(2):  # replica 0 meets the refusal (then its failed renewal) and disables the account
        assert ask(pinned, [{"role": "user", "content": f"问题{n}"}])[0]
    revoked = account_id(cluster.kimi_tokens[0])
    wait_for(lambda: [state_of(cluster, n, revoked) for n in range(3)], 3,
             "every replica shows the revoked account disabled", until=everywhere("disabled"))
    before = len(cluster.kimi.chat_requests)
    for n in range(6):
        ask(client, [{"role": "user", "content": f"之后{n}"}])
    after = cluster.kimi.chat_requests[before:]
    assert len(after) == 6, "a replica still tried the revoked account"
    assert {c.user for c in cluster.kimi.chat_calls[-6:]} == {"user-1"}


def test_one_stream_per_kimi_account_holds_across_replicas(start_cluster: Start) -> None:
    cluster: Cluster = start_cluster(KIMI_MAX_STREAMS_PER_ACCOUNT="1")
    cluster.kimi.reply = KimiReply(text="一个不短的回答，分成几段慢慢发出。")
    cluster.kimi.chunk_delay = 0.25  # each reply streams for about two seconds
    client = cluster.openai()
    first_open = threading.Event()
    ends: dict[str, float] = {}
    firsts: dict[str, float] = {}

    def one(name: str) -> tuple[str, int]:
        with client.chat.completions.with_streaming_response.create(
                model="kimi", messages=[{"role": "user", "content": name}], stream=True) as raw:
            text = ""
            for chunk in raw.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    firsts.setdefault(name, time.monotonic())
                    first_open.set()
                    text += chunk.choices[0].delta.content
            ends[name] = time.monotonic()
            return text, cluster.replica_of(raw)

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(one, "A")
        assert first_open.wait(10)
        b = pool.submit(one, "B")  # least_conn sends it to another replica: A's holds a connection
        (text_a, replica_a), (text_b, replica_b) = a.result(60), b.result(60)
    assert text_a == text_b == "一个不短的回答，分成几段慢慢发出。"
    assert replica_a != replica_b
    assert cluster.kimi.max_active == {"user-0": 1}
    # The proof that the cap is shared: replica B never even tried the account while A streamed on it
    # (a replica with only its own count would have been refused by Kimi: "chat.user_stream_pushing").
    assert cluster.kimi.busy_refusals == 0
    assert firsts["B"] >= ends["A"] - 0.05  # B's reply started only after A's had ended


def test_expired_tokens_are_refreshed_by_exactly_one_replica(start_cluster: Start) -> None:
    cluster: Cluster = start_cluster(rotate=True)  # as Kimi does: a refresh token works once
    for n in range(3):  # each replica answers once (pinned), so each holds an access token
        pinned = cluster.openai(base_url=cluster.replicas[n].base_url)
        assert ask(pinned, [{"role": "user", "content": f"热身{n}"}])[0]
    assert cluster.kimi.refresh_calls == 1, "the replicas signed the one account in more than once at start"
    cluster.kimi.expire_access_tokens()  # every access token handed out is now refused with 401
    cluster.kimi.refresh_gate = threading.Event()  # hold the refresh, so all three meet the 401 meanwhile

    def pinned_ask(n: int) -> str:
        return ask(cluster.openai(base_url=cluster.replicas[n].base_url), [{"role": "user", "content": f"问{n}"}])[0]

    with ThreadPoolExecutor(3) as pool:
        answers = [pool.submit(pinned_ask, n) for n in range(3)]
        wait_for(lambda: cluster.kimi.refresh_calls >= 2, 20, "a replica asks Kimi for new tokens")
        time.sleep(1.0)  # time for a second replica to (wrongly) ask as well
        cluster.kimi.refresh_gate.set()
        assert all(f.result(60) for f in answers)
    assert cluster.kimi.refresh_calls == 2, f"{cluster.kimi.refresh_calls - 1} refreshes for one expiry"
    assert cluster.kimi.legacy_refresh_calls == 0
    live = [t for t in cluster.kimi._refresh if cluster.kimi.user_of(t) == "user-0"]
    assert len(live) == 1  # the account is alive: no replica spent a rotated-away token
    assert all(c["state"] == "active" for n in range(3) for c in cluster.credentials(n))
