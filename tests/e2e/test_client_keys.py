"""Client keys end to end, with the official SDKs against a running gateway: each limit's refusal in
the dialect's own envelope (403, 401, 429 with Retry-After), hot reload of CLIENT_KEYS_FILE, the admin
routes, revocation seen by a second gateway on the same store, and usage after known traffic."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import anthropic
import httpx
import openai
import pytest

from chatbridge.core.metrics import LIMITS_HIT
from chatbridge.runtime import ConfigurationError, build_runtime
from chatbridge.state import MemoryStore, StateStore
from tests.harness import API_KEY, GatewayServer, make_settings
from tests.upstreams import K2ThinkEmulator

MODEL = "MBZUAI-IFM/K2-Think-v2"
KEY_A = "sk-team-a-0123456789abcdef"
KEY_B = "sk-team-b-0123456789abcdef"
KEY_OLD = "sk-team-old-0123456789abc"
MESSAGES = [{"role": "user", "content": "hi"}]


def write_keys(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def keys_yaml(rpm: int | None = None, extra: str = "", **limits: Any) -> str:
    lines = ["keys:", f"  - key: {KEY_A}", "    name: team-a"]
    if rpm is not None:
        lines.append(f"    requests_per_minute: {rpm}")
    lines += [f"    {name}: {value}" for name, value in limits.items()]
    lines += [f"  - key: {KEY_B}", "    name: team-b", '    models: ["kimi*", "claude-*"]',
              f"  - key: {KEY_OLD}", "    name: old", "    expires_at: 2020-01-01T00:00:00Z"]
    return "\n".join(lines) + "\n" + extra


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "client-keys.yaml"


@pytest.fixture
def gateway(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer], keys_file: Path
            ) -> Callable[..., GatewayServer]:
    def start(body: str, **overrides: Any) -> GatewayServer:
        write_keys(keys_file, body)
        return start_gateway(k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token(),
                             client_keys_file=keys_file, **overrides)

    return start


def oai(gw: GatewayServer, key: str) -> openai.OpenAI:
    return gw.openai(api_key=key)


def ant(gw: GatewayServer, key: str) -> anthropic.Anthropic:
    return gw.anthropic(api_key=key)


def admin(gw: GatewayServer) -> httpx.Client:
    return httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {gw.runtime.admin_keys[0]}"}, timeout=30)


def wait_accepted(gw: GatewayServer, key: str, within: float = 1.0) -> None:
    """A key added on one replica is accepted by another within a second (it polls the store's version)."""
    deadline = time.monotonic() + within
    while True:
        try:
            gw.openai(api_key=key).models.list()
            return
        except openai.AuthenticationError:
            assert time.monotonic() < deadline, "the other replica did not accept the new key within a second"
            time.sleep(0.05)


def hits(limit: str) -> float:
    return LIMITS_HIT.labels(limit=limit)._value.get()


# -- limits and their envelopes ------------------------------------------------------------------------------


def test_requests_per_minute_admit_exactly_n_across_concurrent_clients(gateway: Callable[..., GatewayServer]) -> None:
    gw = gateway(keys_yaml(rpm=5))
    before = hits("requests")

    def one(_: int) -> int:
        try:
            oai(gw, KEY_A).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
            return 200
        except openai.RateLimitError as exc:
            assert exc.response.headers["retry-after"].isdigit() and int(exc.response.headers["retry-after"]) >= 1
            body = exc.response.json()["error"]
            assert body["type"] == "rate_limit_error" and body["code"] == "rate_limit_exceeded"
            assert "team-a" in body["message"] and KEY_A not in exc.response.text
            return 429

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(one, range(12)))
    assert statuses.count(200) == 5 and statuses.count(429) == 7
    assert hits("requests") - before == 7
    # Another key is not affected; and the Anthropic dialect refuses in its own envelope.
    oai(gw, API_KEY).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as refused:
        ant(gw, KEY_A).messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)  # type: ignore[arg-type]
    body = refused.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert int(refused.value.response.headers["retry-after"]) >= 1


def test_a_model_outside_the_keys_globs_is_403_in_each_dialect(gateway: Callable[..., GatewayServer]) -> None:
    gw = gateway(keys_yaml())
    before = hits("model")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        oai(gw, KEY_B).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    error = refused.value.response.json()["error"]
    assert error["type"] == "permission_error" and error["code"] == "model_not_allowed" and MODEL in error["message"]
    with pytest.raises(anthropic.PermissionDeniedError) as refused_a:
        ant(gw, KEY_B).messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)  # type: ignore[arg-type]
    assert refused_a.value.response.json()["error"]["type"] == "permission_error"
    assert hits("model") - before == 2
    # team-a (no globs) may use it
    assert oai(gw, KEY_A).chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content  # type: ignore[arg-type]


def test_the_model_list_shows_a_key_only_its_models(gateway: Callable[..., GatewayServer]) -> None:
    gw = gateway(keys_yaml(extra=f"  - key: sk-exact-0123456789abcdef\n    name: exact\n    models: [{MODEL!r}]\n"))
    assert [m.id for m in oai(gw, "sk-exact-0123456789abcdef").models.list()] == [MODEL]
    assert [m.id for m in ant(gw, "sk-exact-0123456789abcdef").models.list()] == [MODEL]
    assert oai(gw, KEY_B).models.list().data == []  # kimi* and claude-* only: none served here
    assert {m.id for m in oai(gw, KEY_A).models.list()} == {MODEL, MODEL + "-nothink"}
    assert oai(gw, "sk-exact-0123456789abcdef").models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError, match="may not use it"):  # not listed for it, not found for it
        oai(gw, "sk-exact-0123456789abcdef").models.retrieve(MODEL + "-nothink")
    with pytest.raises(anthropic.NotFoundError, match="may not use it"):
        ant(gw, "sk-exact-0123456789abcdef").models.retrieve(MODEL + "-nothink")
    with pytest.raises(openai.PermissionDeniedError):
        oai(gw, "sk-exact-0123456789abcdef").chat.completions.create(model=MODEL + "-nothink", messages=MESSAGES)  # type: ignore[arg-type]


def test_model_globs_match_ids_in_any_case_as_the_router_does(gateway: Callable[..., GatewayServer]) -> None:
    """The router serves `mbzuai-ifm/k2-think-v2` as `MBZUAI-IFM/K2-Think-v2`: a glob written in either case
    must allow (and list) the model under either spelling, not only the one that happens to match its case."""
    gw = gateway(keys_yaml(extra="  - key: sk-lower-0123456789abcdef\n    name: lower\n    models: ['mbzuai-ifm/*-v2']\n"))
    lower = "sk-lower-0123456789abcdef"
    assert [m.id for m in oai(gw, lower).models.list()] == [MODEL]
    assert oai(gw, lower).chat.completions.create(model=MODEL, messages=MESSAGES).choices  # type: ignore[arg-type]
    assert ant(gw, lower).messages.create(model=MODEL.upper(), max_tokens=50, messages=MESSAGES).content  # type: ignore[arg-type]
    with pytest.raises(openai.PermissionDeniedError):  # still only what the glob names
        oai(gw, lower).chat.completions.create(model=MODEL + "-nothink", messages=MESSAGES)  # type: ignore[arg-type]


def test_an_expired_key_is_401_in_each_dialect(gateway: Callable[..., GatewayServer]) -> None:
    gw = gateway(keys_yaml())
    with pytest.raises(openai.AuthenticationError) as refused:
        oai(gw, KEY_OLD).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    error = refused.value.response.json()["error"]
    assert error["code"] == "expired_api_key" and "expired" in error["message"] and KEY_OLD not in refused.value.response.text
    with pytest.raises(anthropic.AuthenticationError) as refused_a:
        ant(gw, KEY_OLD).messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)  # type: ignore[arg-type]
    assert refused_a.value.response.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):  # an unknown key, as before
        oai(gw, "sk-not-a-key-at-all-000").models.list()


def test_tokens_per_day_refuse_once_the_recorded_usage_reaches_the_limit(gateway: Callable[..., GatewayServer]) -> None:
    gw = gateway(keys_yaml(tokens_per_day=30))
    first = oai(gw, KEY_A).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert first.usage is not None and 0 < first.usage.total_tokens < 30
    used = first.usage.total_tokens
    while used < 30:  # a request is admitted while the day's total is under the limit
        answer = oai(gw, KEY_A).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,  # type: ignore[arg-type]
                                                        stream_options={"include_usage": True})
        used += sum(c.usage.total_tokens for c in answer if c.usage)
    before = hits("tokens")
    with pytest.raises(openai.RateLimitError) as refused:
        oai(gw, KEY_A).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    retry = int(refused.value.response.headers["retry-after"])
    assert 1 <= retry <= 86400 and "tokens for today" in refused.value.response.json()["error"]["message"]
    assert hits("tokens") - before == 1


def test_concurrent_streams_are_capped_and_the_slot_is_freed_at_the_end(
        gateway: Callable[..., GatewayServer], k2emu: K2ThinkEmulator) -> None:
    gw = gateway(keys_yaml(max_concurrent_streams=1))
    k2emu.slow_stream(6, 0.15)
    started, done = threading.Event(), threading.Event()

    def long_stream() -> None:
        with oai(gw, KEY_A).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as stream:  # type: ignore[arg-type]
            for _ in stream:
                started.set()
        done.set()

    worker = threading.Thread(target=long_stream)
    worker.start()
    assert started.wait(10)
    before = hits("streams")
    with pytest.raises(anthropic.RateLimitError) as refused:
        ant(gw, KEY_A).messages.create(model=MODEL, max_tokens=50, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    assert refused.value.response.headers["retry-after"] == "1"
    assert refused.value.response.json()["error"]["type"] == "rate_limit_error"
    assert hits("streams") - before == 1
    worker.join(30)
    assert done.is_set()
    k2emu.slow_stream(1, 0.0)
    assert oai(gw, KEY_A).chat.completions.create(model=MODEL, messages=MESSAGES).choices  # type: ignore[arg-type]


def test_a_client_that_leaves_mid_stream_frees_its_slot(gateway: Callable[..., GatewayServer], k2emu: K2ThinkEmulator) -> None:
    gw = gateway(keys_yaml(max_concurrent_streams=1))
    k2emu.slow_stream(20, 0.2)
    with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30) as http, \
            http.stream("POST", "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "stream": True}) as r:
        assert r.status_code == 200
        next(r.iter_bytes())
    k2emu.slow_stream(1, 0.0)
    deadline = time.monotonic() + 5
    while True:  # the gateway sees the disconnect and releases the slot
        try:
            oai(gw, KEY_A).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the slot of a client that left was not released"
            time.sleep(0.1)


class Outcome(threading.Thread):
    """One request made in the background: what it raised, and when it ended."""

    def __init__(self, call: Callable[[threading.Event], Any]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.started = threading.Event()  # set by the call when its first chunk arrived
        self.error: BaseException | None = None
        self.ended_at = 0.0

    def run(self) -> None:
        try:
            self.call(self.started)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.started.set()


def openai_stream(gw: GatewayServer, key: str) -> Callable[[threading.Event], Any]:
    def call(started: threading.Event) -> None:
        with oai(gw, key).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as stream:  # type: ignore[arg-type]
            for _ in stream:
                started.set()
    return call


def anthropic_stream(gw: GatewayServer, key: str) -> Callable[[threading.Event], Any]:
    def call(started: threading.Event) -> None:
        with ant(gw, key).messages.create(model=MODEL, max_tokens=4000, messages=MESSAGES, stream=True) as stream:  # type: ignore[arg-type]
            for _ in stream:
                started.set()
    return call


def openai_whole(gw: GatewayServer, key: str) -> Callable[[threading.Event], Any]:
    def call(started: threading.Event) -> None:
        started.set()
        oai(gw, key).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    return call


def test_revoking_a_key_ends_its_open_answers_at_once_in_each_dialect_and_spares_the_others(
        gateway: Callable[..., GatewayServer], k2emu: K2ThinkEmulator) -> None:
    """A leaked key must stop costing upstream time when it is revoked, not when its answers end."""
    gw = gateway(keys_yaml())
    with admin(gw) as http:
        leaked = http.post("/admin/keys", json={"name": "leaked"}).json()["data"]["key"]
    k2emu.slow_stream(60, 0.1)  # reasoning for 6 s, then the answer for 6 s
    ending = [Outcome(openai_stream(gw, leaked)), Outcome(anthropic_stream(gw, leaked)), Outcome(openai_whole(gw, leaked))]
    spared = Outcome(openai_stream(gw, KEY_A))
    for outcome in (*ending, spared):
        outcome.start()
    for outcome in (*ending, spared):
        assert outcome.started.wait(10)
    time.sleep(0.5)  # the whole answer's request is at the upstream by now
    disconnects = k2emu.client_disconnects
    with admin(gw) as http:
        assert http.delete("/admin/keys/leaked").status_code == 200
    revoked_at = time.monotonic()
    for outcome in ending:
        outcome.join(5)
        assert not outcome.is_alive(), "an answer of a revoked key went on"
        assert outcome.ended_at - revoked_at < 1.5
    streamed_openai, streamed_anthropic, whole = (o.error for o in ending)
    assert isinstance(streamed_openai, openai.APIError) and "revoked" in str(streamed_openai)
    assert isinstance(streamed_anthropic, anthropic.APIStatusError) and "revoked" in str(streamed_anthropic)
    assert isinstance(streamed_anthropic.body, dict)
    assert streamed_anthropic.body["error"]["type"] == "authentication_error"
    assert isinstance(whole, openai.AuthenticationError) and "revoked" in whole.message
    deadline = time.monotonic() + 5
    while k2emu.client_disconnects - disconnects < 3:  # each upstream request was given up
        assert time.monotonic() < deadline, "the upstream requests of a revoked key went on"
        time.sleep(0.05)
    assert spared.is_alive() and spared.error is None  # another key's answer goes on
    k2emu.slow_stream(1, 0.0)
    spared.join(30)
    assert spared.error is None
    assert "ending 3 open answer(s)" in gw.logs.text and leaked not in gw.logs.text


def test_a_key_revoked_while_its_request_body_was_arriving_is_refused(gateway: Callable[..., GatewayServer]) -> None:
    """The key was accepted at the headers; the answer must not start once it has been revoked."""
    gw = gateway(keys_yaml())
    with admin(gw) as http:
        leaked = http.post("/admin/keys", json={"name": "leaked"}).json()["data"]["key"]
    body = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
    host, port = gw.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {leaked}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        time.sleep(0.3)
        with admin(gw) as http:
            assert http.delete("/admin/keys/leaked").status_code == 200
        sock.sendall(body[10:])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), answer
    assert json.loads(rest)["error"]["code"] == "invalid_api_key" and b"revoked" in rest


def test_a_key_removed_from_the_file_ends_its_open_answer(
        gateway: Callable[..., GatewayServer], k2emu: K2ThinkEmulator, keys_file: Path) -> None:
    gw = gateway(keys_yaml())
    k2emu.slow_stream(60, 0.1)
    stream = Outcome(openai_stream(gw, KEY_A))
    stream.start()
    assert stream.started.wait(10)
    write_keys(keys_file, f"keys:\n  - key: {KEY_B}\n    name: team-b\n")
    removed_at = time.monotonic()
    stream.join(5)
    assert not stream.is_alive() and stream.ended_at - removed_at < 2.0  # the file is polled twice a second
    assert isinstance(stream.error, openai.APIError) and "revoked" in str(stream.error)


# -- the file ---------------------------------------------------------------------------------------------------


def test_the_file_is_reloaded_on_change_and_a_broken_edit_keeps_the_last_good_set(
        gateway: Callable[..., GatewayServer], keys_file: Path) -> None:
    gw = gateway(keys_yaml())
    new_key = "sk-team-new-0123456789abcd"
    assert oai(gw, KEY_A).models.list().data
    write_keys(keys_file, f"keys:\n  - key: {new_key}\n    name: newcomer\n")
    deadline = time.monotonic() + 5
    while True:
        try:
            oai(gw, new_key).models.list()
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline, "the edited file was not re-read"
            time.sleep(0.1)
    with pytest.raises(openai.AuthenticationError):  # team-a was removed from the file
        oai(gw, KEY_A).models.list()
    write_keys(keys_file, f"keys:\n  - key: {KEY_A}\n    name: newcomer\n    colour: red\n")
    deadline = time.monotonic() + 5
    while "colour: unknown field" not in gw.logs.text:
        assert time.monotonic() < deadline, "the broken edit was not reported"
        time.sleep(0.1)
    assert oai(gw, new_key).models.list().data  # the last good set is kept
    assert KEY_A not in gw.logs.text and new_key not in gw.logs.text
    listed = admin(gw).get("/admin/keys").json()["data"]
    assert "colour" in listed["file"]["last_reload_error"]


def test_a_broken_file_at_start_is_a_configuration_error_naming_the_entry(tmp_path: Path, keys_file: Path) -> None:
    write_keys(keys_file, f"keys:\n  - key: {KEY_A}\n    name: a\n  - key: {KEY_A}\n    name: b\n")
    with pytest.raises(ConfigurationError) as refused:
        build_runtime(make_settings(tmp_path, client_keys_file=keys_file))
    assert "keys[1] (name 'b') has the same key as keys[0] (name 'a')" in str(refused.value)
    assert KEY_A not in str(refused.value)
    write_keys(keys_file, "keys:\n  - key: sk-test-client-key-0123456789\n    name: dup\n")  # VALID_API_KEY itself
    with pytest.raises(ConfigurationError, match="also VALID_API_KEY"):
        build_runtime(make_settings(tmp_path, client_keys_file=keys_file))


def test_with_a_file_no_client_key_is_generated(tmp_path: Path, keys_file: Path) -> None:
    write_keys(keys_file, keys_yaml())
    runtime = build_runtime(make_settings(tmp_path, client_keys_file=keys_file, valid_api_key=None))
    assert runtime.client_keys == [] and not (tmp_path / "data" / "api_key").exists()
    assert sorted(k.name for k in runtime.keys.keys) == ["old", "team-a", "team-b"]


def test_keys_added_and_revoked_through_the_api_persist_across_a_restart(
        k2emu: K2ThinkEmulator, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token())
    first = GatewayServer(settings).start()
    try:
        with admin(first) as http:
            kept = http.post("/admin/keys", json={"name": "kept", "requests_per_minute": 3}).json()["data"]["key"]
            gone = http.post("/admin/keys", json={"name": "gone"}).json()["data"]["key"]
            assert http.delete("/admin/keys/gone").status_code == 200
    finally:
        first.stop()
    assert kept not in (tmp_path / "data" / "pool-state.json").read_text()  # only its digest is kept
    second = GatewayServer(make_settings(tmp_path, k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token())).start()
    try:
        assert oai(second, kept).models.list().data
        with pytest.raises(openai.AuthenticationError):
            oai(second, gone).models.list()
        listed = {k["name"]: k for k in admin(second).get("/admin/keys").json()["data"]["keys"]}
        assert listed["kept"]["requests_per_minute"] == 3 and "gone" not in listed
    finally:
        second.stop()


# -- admin routes, across gateways ---------------------------------------------------------------------------


class SharedStoreGateway(GatewayServer):
    """A gateway whose runtime uses `store`: two of them stand for two replicas on one Redis."""

    def __init__(self, settings: Any, store: StateStore) -> None:
        with mock.patch("tests.harness.build_runtime", lambda s: build_runtime(s, store=store)):
            super().__init__(settings)


class SharedStore(MemoryStore):
    """Closed by the test, not by whichever replica stops first."""

    async def aclose(self) -> None:
        pass


@pytest.fixture
def replicas(k2emu: K2ThinkEmulator, tmp_path: Path) -> Iterator[tuple[GatewayServer, GatewayServer]]:
    store = SharedStore()
    token = k2emu.mint_token()
    pair = [SharedStoreGateway(make_settings(tmp_path / f"r{i}", k2think_base_url=k2emu.base_url, k2think_token=token,
                                             admin_api_key="sk-admin-shared-0123456789"), store).start()
            for i in range(2)]
    yield pair[0], pair[1]
    for gw in pair:
        gw.stop()


def test_admin_add_list_revoke_and_the_other_replica_sees_the_revocation_within_a_second(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    one, two = replicas
    with admin(one) as http:
        refused = httpx.post(one.base_url + "/admin/keys", json={"name": "x"}, headers={"Authorization": f"Bearer {API_KEY}"})
        assert refused.status_code == 401  # a client key does not administer
        added = http.post("/admin/keys", json={"name": "ci", "models": ["MBZUAI*"], "requests_per_minute": 100})
        assert added.status_code == 201
        key = added.json()["data"]["key"]
        assert key.startswith("sk-cb-") and len(key) > 40
        given = http.post("/admin/keys", json={"name": "given", "key": "sk-given-by-admin-0123456"})
        assert given.status_code == 201 and given.json()["data"]["key"] == "sk-given-by-admin-0123456"
        listed = http.get("/admin/keys").json()["data"]["keys"]
        assert key not in str(listed) and "sk-given-by-admin-0123456" not in str(listed)
        ci = next(k for k in listed if k["name"] == "ci")
        assert ci["source"] == "api" and ci["revocable"] and ci["models"] == ["MBZUAI*"] and ci["key"] == key[:6] + "…" + key[-4:]
        for bad, status in (({"name": "ci"}, 409), ({"name": "other", "key": "sk-given-by-admin-0123456"}, 409),
                            ({"name": "y", "requests_per_minute": -1}, 400), ({"name": "y", "colour": 1}, 400),
                            ({"name": "y", "key": "sk-admin-shared-0123456789"}, 409), ({"name": "y", "key_sha256": "0" * 64}, 400)):
            response = http.post("/admin/keys", json=bad)
            assert response.status_code == status, (bad, response.text)
            assert response.json()["status"] == "error"
        assert http.post("/admin/keys", content=b"not json").status_code == 400
        assert http.delete("/admin/keys/VALID_API_KEY").status_code == 409  # an env key is not revoked here
        assert http.delete("/admin/keys/nobody").status_code == 404

    wait_accepted(two, key)
    assert oai(two, key).chat.completions.create(model=MODEL, messages=MESSAGES).choices  # type: ignore[arg-type]
    with admin(one) as http:
        assert http.delete("/admin/keys/ci").status_code == 200
    revoked_at = time.monotonic()
    while True:
        try:
            oai(two, key).models.list()
        except openai.AuthenticationError:
            break
        assert time.monotonic() - revoked_at < 1.0, "the other replica still accepts a revoked key after a second"
        time.sleep(0.05)
    assert oai(one, "sk-given-by-admin-0123456").models.list().data  # the other API key still works
    assert key not in one.logs.text and key not in two.logs.text


def test_admin_refuses_a_key_no_sdk_can_send_and_names_that_cannot_be_told_apart_or_revoked(
        gateway: Callable[..., GatewayServer]) -> None:
    """An operator is told at once, not by a client's UnicodeEncodeError or a DELETE that misses."""
    gw = gateway(keys_yaml())
    with admin(gw) as http:
        for bad in ({"name": "ci", "key": "sk-équipe-0123456789abcdef"}, {"name": "team-a\u200b"},
                    {"name": "ci\u2028x"}, {"name": "."}, {"name": ".."}):
            response = http.post("/admin/keys", json=bad)
            assert response.status_code == 400, (bad, response.text)
            assert "équipe" not in response.text
        assert [k["name"] for k in http.get("/admin/keys").json()["data"]["keys"]] == ["VALID_API_KEY", "team-a", "team-b", "old"]
        key = http.post("/admin/keys", json={"name": "équipe β", "key": "sk-equipe-0123456789abcdef"}).json()["data"]["key"]
    assert oai(gw, key).chat.completions.create(model=MODEL, messages=MESSAGES).choices  # type: ignore[arg-type]
    with admin(gw) as http:
        assert http.delete("/admin/keys/équipe β").status_code == 200


def test_a_rotated_key_starts_with_a_fresh_budget_and_a_key_added_again_keeps_its_own(
        gateway: Callable[..., GatewayServer]) -> None:
    """Revoke a leaked key and add its name again: the new key is not told it "has used its tokens";
    re-adding the very same key (the way to change its limits) does not reset what it used."""
    gw = gateway(keys_yaml())
    with admin(gw) as http:
        leaked = http.post("/admin/keys", json={"name": "ci", "tokens_per_day": 10}).json()["data"]["key"]
        oai(gw, leaked).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError):
            oai(gw, leaked).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        assert http.delete("/admin/keys/ci").status_code == 200
        fresh = http.post("/admin/keys", json={"name": "ci", "tokens_per_day": 10}).json()["data"]["key"]
        assert oai(gw, fresh).chat.completions.create(model=MODEL, messages=MESSAGES).choices  # type: ignore[arg-type]
        assert http.delete("/admin/keys/ci").status_code == 200
        again = http.post("/admin/keys", json={"name": "ci", "key": fresh, "tokens_per_day": 10, "models": ["MBZUAI*"]})
        assert again.status_code == 201
        with pytest.raises(anthropic.RateLimitError):  # what it used today still counts
            ant(gw, fresh).messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)  # type: ignore[arg-type]
        rows = http.get("/admin/usage", params={"key": "ci"}).json()["data"]["totals"]
    assert rows["requests"] == 2  # usage stays by name: both keys' requests


def test_usage_per_key_model_and_provider_after_known_traffic(replicas: tuple[GatewayServer, GatewayServer]) -> None:
    one, two = replicas
    with admin(one) as http:
        key = http.post("/admin/keys", json={"name": "metered"}).json()["data"]["key"]
    wait_accepted(two, key)
    prompt = completion = 0
    for gw in (one, two, two):  # the replicas add into the same figures
        answer = oai(gw, key).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        assert answer.usage is not None
        prompt += answer.usage.prompt_tokens
        completion += answer.usage.completion_tokens
    for event in ant(one, key).messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True):  # type: ignore[arg-type]
        if event.type == "message_delta":  # the final usage: the upstream's figures
            assert event.usage.input_tokens is not None
            prompt += event.usage.input_tokens
            completion += event.usage.output_tokens
    with pytest.raises(openai.NotFoundError):  # an error: counted as a request and an error
        oai(two, key).chat.completions.create(model="no-such-model", messages=MESSAGES)  # type: ignore[arg-type]
    oai(one, API_KEY).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert prompt > 0 and completion > 0
    time.sleep(1.3)  # the other replica writes its figures to the store every second
    with admin(one) as http:
        rows = http.get("/admin/usage", params={"key": "metered"}).json()["data"]
        everyone = http.get("/admin/usage").json()["data"]["usage"]
    assert rows["usage"] == [
        {"key": "metered", "provider": "k2think", "model": MODEL, "requests": 4, "input_tokens": prompt,
         "output_tokens": completion, "errors": 0},
        {"key": "metered", "provider": "none", "model": "unknown", "requests": 1, "input_tokens": 0,
         "output_tokens": 0, "errors": 1},
    ]
    assert rows["totals"] == {"requests": 5, "input_tokens": prompt, "output_tokens": completion, "errors": 1}
    assert next(r for r in everyone if r["key"] == "VALID_API_KEY")["requests"] == 1  # the unlimited key too


def test_usage_rows_are_named_by_the_served_model_so_client_names_cannot_grow_the_store(
        gateway: Callable[..., GatewayServer]) -> None:
    """Model names are client input: a key holder sending a thousand made-up (or glob-aliased) names,
    some of them 10 kB long, must not add a thousand rows to the store; they count under the model
    they were served by, or under `unknown`."""
    gw = gateway(keys_yaml(), anthropic_model_map="claude-*=k2think")
    for n in range(150):
        with pytest.raises(openai.NotFoundError):
            oai(gw, KEY_A).chat.completions.create(model=f"made-up-{n}-" + "x" * 10_000, messages=MESSAGES)  # type: ignore[arg-type]
    for n in range(3):  # an alias glob admits any name; the row is its target's
        oai(gw, KEY_A).chat.completions.create(model=f"claude-anything-{n}", messages=MESSAGES)  # type: ignore[arg-type]
    with admin(gw) as http:
        rows = http.get("/admin/usage", params={"key": "team-a"}).json()["data"]["usage"]
    assert [(r["provider"], r["model"], r["requests"], r["errors"]) for r in rows] == [
        ("k2think", MODEL, 3, 0), ("none", "unknown", 150, 150)]  # the rows are the store's keys


def test_a_key_revoked_on_one_replica_ends_its_open_answer_on_the_other(
        replicas: tuple[GatewayServer, GatewayServer], k2emu: K2ThinkEmulator) -> None:
    one, two = replicas
    with admin(one) as http:
        key = http.post("/admin/keys", json={"name": "leaked"}).json()["data"]["key"]
    wait_accepted(two, key)
    k2emu.slow_stream(60, 0.1)
    stream = Outcome(openai_stream(two, key))
    stream.start()
    assert stream.started.wait(10)
    with admin(one) as http:
        assert http.delete("/admin/keys/leaked").status_code == 200
    revoked_at = time.monotonic()
    stream.join(5)
    assert not stream.is_alive() and stream.ended_at - revoked_at < 1.5  # the store's version is polled twice a second
    assert isinstance(stream.error, openai.APIError) and "revoked" in str(stream.error)
