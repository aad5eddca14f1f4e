"""Tests of the upstream emulators themselves, over real loopback HTTP.

Plain sync tests driving an aiohttp client through ``asyncio.run`` so they do
not depend on pytest-asyncio configuration.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import jwt
import pytest

from tests.upstreams import BackgroundServer, K2ThinkEmulator, OpenAICompatEmulator, Reply
from tests.upstreams.k2think import (
    BAD_CREDENTIALS_DETAIL,
    CHAT_PATH,
    DEFAULT_MODEL,
    GUEST_CHAT_PATH,
    SHAPES,
    SIGNIN_PATH,
    cut_text,
)

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
REASONING = "The user greets me. I should greet back."
ANSWER = "Hello! How can I help you today?"
HI = [{"role": "user", "content": "hi"}]


def run(fn: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
    """Run ``fn(session)`` on a fresh loop with a fresh client session."""

    async def main() -> T:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            return await fn(session)

    return asyncio.run(main())


def parse_sse(raw: bytes) -> list[str]:
    """Return the ``data:`` payloads of an SSE byte stream (LF or CRLF)."""
    text = raw.decode().replace("\r\n", "\n")
    return [block[len("data: ") :] for block in text.split("\n\n") if block.startswith("data: ")]


def chat_body(stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {"model": DEFAULT_MODEL, "messages": HI, "stream": stream, **extra}


async def post(
    session: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(url, json=body, headers=headers or {}) as resp:
        return resp.status, dict(resp.headers), await resp.read()


@pytest.fixture
def k2() -> Iterator[K2ThinkEmulator]:
    with K2ThinkEmulator() as emu:
        yield emu


@pytest.fixture
def oai() -> Iterator[OpenAICompatEmulator]:
    with OpenAICompatEmulator() as emu:
        yield emu


def k2_stream(emu: K2ThinkEmulator, shape: str, guest: bool = True, **body: Any) -> list[str]:
    """POST a streaming chat in ``shape`` and return the SSE payloads."""
    path = GUEST_CHAT_PATH if guest else CHAT_PATH
    headers = {"x-emu-shape": shape}
    if not guest:
        headers["Authorization"] = f"Bearer {emu.mint_token()}"
    status, resp_headers, raw = run(lambda s: post(s, emu.url(path), chat_body(**body), headers))
    assert status == 200, raw
    assert resp_headers["Content-Type"].startswith("text/event-stream")
    return parse_sse(raw)


# ---------------------------------------------------------------------------
# BackgroundServer
# ---------------------------------------------------------------------------


def test_background_server_serves_and_stops() -> None:
    from aiohttp import web

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hi")

    def factory() -> web.Application:
        app = web.Application()
        app.router.add_get("/", hello)
        return app

    server = BackgroundServer(factory)
    base = server.start()
    assert base.startswith("http://127.0.0.1:")

    async def get(s: aiohttp.ClientSession) -> str:
        async with s.get(base + "/") as resp:
            return await resp.text()

    assert run(get) == "hi"
    server.stop()
    assert not server.running
    with BackgroundServer(factory) as again:
        assert again.base_url != ""


# ---------------------------------------------------------------------------
# K2Think shapes
# ---------------------------------------------------------------------------


def test_cumulative_details_rerenders_snapshots(k2: K2ThinkEmulator) -> None:
    events = [json.loads(e) for e in k2_stream(k2, "cumulative_details")]
    contents = [e["content"] for e in events if "content" in e and "done" not in e]
    assert contents[0].startswith(
        '<details type="reasoning" done="false">\n<summary>Thinking…</summary>\n> '
    )
    final = contents[-1]
    assert final == (
        '<details type="reasoning" done="true" duration="2">\n'
        "<summary>Thought for 2 seconds</summary>\n"
        f"> {REASONING}\n</details>\n<answer>{ANSWER}</answer>"
    )
    # re-rendered: some snapshot is not a prefix of its successor
    assert any(not b.startswith(a) for a, b in itertools.pairwise(contents))
    assert "usage" in events[-2]
    assert events[-1] == {"done": True, "content": final, "title": "Greeting"}


def test_details_quotes_every_reasoning_line(k2: K2ThinkEmulator) -> None:
    k2.reply = Reply(reasoning="line one\nline two", answer="ok")
    events = [json.loads(e) for e in k2_stream(k2, "cumulative_details")]
    assert "> line one\n> line two\n</details>" in events[-1]["content"]


def test_cumulative_think_variants(k2: K2ThinkEmulator) -> None:
    done = json.loads(k2_stream(k2, "cumulative_think")[-1])
    assert done["content"] == f"<think>{REASONING}</think>{ANSWER}"

    k2.answer_tags = True
    done = json.loads(k2_stream(k2, "cumulative_think")[-1])
    assert done["content"] == f"<think>{REASONING}</think><answer>{ANSWER}</answer>"
    k2.answer_tags = False

    events = [json.loads(e) for e in k2_stream(k2, "cumulative_think_duration")]
    assert events[0]["content"].startswith("<think>")
    assert events[-1]["content"] == f'<think duration="2">{REASONING}</think>{ANSWER}'

    events = [json.loads(e) for e in k2_stream(k2, "cumulative_missing_open")]
    assert all("<think" not in e.get("content", "") for e in events)
    assert events[-1]["content"] == f"{REASONING}</think>{ANSWER}"


def test_delta_tags_split_inside_tags(k2: K2ThinkEmulator) -> None:
    payloads = k2_stream(k2, "delta_tags", guest=False)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage = chunks.pop()
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] > 0
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert "".join(pieces) == f"<think>{REASONING}</think>{ANSWER}"
    assert "<th" in pieces and any(p.startswith("ink>") for p in pieces)


def test_delta_reasoning(k2: K2ThinkEmulator) -> None:
    payloads = k2_stream(k2, "delta_reasoning", guest=False)
    deltas = [json.loads(p)["choices"][0]["delta"] for p in payloads[:-2]]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    content = "".join(d.get("content", "") for d in deltas)
    assert (reasoning, content) == (REASONING, ANSWER)
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    last_reasoning = max(i for i, d in enumerate(deltas) if "reasoning_content" in d)
    assert last_reasoning < first_content


@pytest.mark.parametrize(
    ("shape", "answer_tags", "expected"),
    [
        ("json", False, f'<think duration="2">{REASONING}</think>{ANSWER}'),
        ("json", True, f'<think duration="2">{REASONING}</think><answer>{ANSWER}</answer>'),
        ("json_missing_open", False, f"{REASONING}</think>{ANSWER}"),
    ],
)
def test_json_shapes_ignore_stream_flag(
    k2: K2ThinkEmulator, shape: str, answer_tags: bool, expected: str
) -> None:
    k2.accept_any_token = True
    k2.answer_tags = answer_tags
    k2.shape = shape
    status, headers, raw = run(
        lambda s: post(s, k2.url(CHAT_PATH), chat_body(), {"Authorization": "Bearer x"})
    )
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    body = json.loads(raw)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == expected
    assert (
        body["usage"]["total_tokens"]
        == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


def test_non_streaming_request_gets_json_and_default_shapes(k2: K2ThinkEmulator) -> None:
    k2.accept_any_token = True
    auth = {"Authorization": "Bearer x"}
    status, _, raw = run(lambda s: post(s, k2.url(CHAT_PATH), chat_body(stream=False), auth))
    assert status == 200 and json.loads(raw)["object"] == "chat.completion"
    _, _, raw = run(lambda s: post(s, k2.url(CHAT_PATH), chat_body(), auth))
    assert parse_sse(raw)[-1] == "[DONE]"  # token mode default: delta_tags
    _, _, raw = run(lambda s: post(s, k2.url(GUEST_CHAT_PATH), chat_body()))
    assert json.loads(parse_sse(raw)[-1])["done"] is True  # guest default: cumulative_details


def test_every_shape_is_served(k2: K2ThinkEmulator) -> None:
    for shape in SHAPES:
        k2.shape = shape
        status, _, _ = run(lambda s: post(s, k2.url(GUEST_CHAT_PATH), chat_body()))
        assert status == 200, shape
    status, _, _ = run(
        lambda s: post(s, k2.url(GUEST_CHAT_PATH), chat_body(), {"x-emu-shape": "nope"})
    )
    assert status == 400


def test_raw_content_responder_and_finish_reason(k2: K2ThinkEmulator) -> None:
    def responder(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"]
        return Reply(raw_content=f"<think>odd</think>echo:{last}", finish_reason="length")

    k2.responder = responder
    payloads = k2_stream(k2, "delta_tags", messages=[{"role": "user", "content": "ping"}])
    chunks = [json.loads(p) for p in payloads[:-2]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "<think>odd</think>echo:ping"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    done = json.loads(k2_stream(k2, "cumulative_think")[-1])
    assert done["content"] == "<think>odd</think>echo:hi"


def test_cut_text_keeps_or_cuts_tags() -> None:
    text = "<think>abc</think><answer>x</answer>"
    assert "".join(cut_text(text, 5, awkward=False)) == text
    assert all(not p.startswith(("ink>", "nk>", "wer>")) for p in cut_text(text, 5, awkward=False))
    assert "<th" in cut_text(text, 2, awkward=True)


# ---------------------------------------------------------------------------
# K2Think framing, failures, disconnects
# ---------------------------------------------------------------------------


def test_split_writes_really_split(k2: K2ThinkEmulator) -> None:
    k2.reply = Reply(reasoning="考えています…" * 5, answer="日本語の答え")
    k2.split_writes = True
    k2.line_ending = "\r\n"

    async def read_chunks(s: aiohttp.ClientSession) -> list[bytes]:
        headers = {"x-emu-shape": "cumulative_details"}
        async with s.post(k2.url(GUEST_CHAT_PATH), json=chat_body(), headers=headers) as resp:
            return [data async for data, _ in resp.content.iter_chunks() if data]

    chunks = run(read_chunks)
    assert len(chunks) > 50 and all(len(c) <= 7 for c in chunks)
    raw = b"".join(chunks)
    assert b"\r\n\r\n" in raw
    events = [json.loads(e) for e in parse_sse(raw)]
    assert events[-1]["done"] is True
    # some slices cut multi-byte characters (3 bytes each here)
    assert any(_is_cut_utf8(c) for c in chunks)


def _is_cut_utf8(chunk: bytes) -> bool:
    try:
        chunk.decode()
    except UnicodeDecodeError:
        return True
    return False


def test_fail_next_then_recover(k2: K2ThinkEmulator) -> None:
    k2.fail_next(2, status=429, headers={"Retry-After": "7"})
    k2.fail_next(1, status=502, body="<html>bad gateway</html>")
    results = [run(lambda s: post(s, k2.url(GUEST_CHAT_PATH), chat_body())) for _ in range(4)]
    assert [r[0] for r in results] == [429, 429, 502, 200]
    assert results[0][1]["Retry-After"] == "7"
    assert results[2][1]["Content-Type"].startswith("text/html")


def test_delay_first_byte_times_out_and_counts_disconnect(k2: K2ThinkEmulator) -> None:
    k2.delay_first_byte = 2.0

    async def call(s: aiohttp.ClientSession) -> None:
        timeout = aiohttp.ClientTimeout(total=0.2)
        async with s.post(k2.url(GUEST_CHAT_PATH), json=chat_body(), timeout=timeout):
            pass

    with pytest.raises(asyncio.TimeoutError):
        run(call)
    assert k2.wait_for_disconnect(2.0)
    assert k2.client_disconnects == 1


def test_break_mid_stream(k2: K2ThinkEmulator) -> None:
    k2.break_mid_stream = True
    k2.interrupt_after_events = 3

    async def read(s: aiohttp.ClientSession) -> bytes:
        async with s.post(k2.url(GUEST_CHAT_PATH), json=chat_body()) as resp:
            return await resp.read()

    with pytest.raises(aiohttp.ClientPayloadError):
        run(read)
    assert k2.broken_streams == 1
    assert k2.client_disconnects == 0


def test_hang_mid_stream_detects_client_leaving(k2: K2ThinkEmulator) -> None:
    k2.hang_mid_stream = True

    async def read_two(s: aiohttp.ClientSession) -> list[bytes]:
        async with s.post(k2.url(GUEST_CHAT_PATH), json=chat_body()) as resp:
            lines: list[bytes] = []
            while len(lines) < 2:
                line = await resp.content.readline()
                if line.startswith(b"data:"):
                    lines.append(line)
            return lines

    assert len(run(read_two)) == 2
    assert k2.wait_for_disconnect(2.0)
    assert k2.completed_streams == 0


def test_slow_stream_disconnect(k2: K2ThinkEmulator) -> None:
    k2.slow_stream(100, 0.05)  # ~10 s if read to the end

    async def read_some(s: aiohttp.ClientSession) -> int:
        async with s.post(k2.url(GUEST_CHAT_PATH), json=chat_body()) as resp:
            await resp.content.readline()
            return resp.status

    started = time.monotonic()
    assert run(read_some) == 200
    assert k2.wait_for_disconnect(3.0)
    assert time.monotonic() - started < 5.0
    assert k2.completed_streams == 0

    k2.chunk_delay = 0
    payloads = k2_stream(k2, "delta_reasoning")
    assert len(payloads) >= 200  # 100 reasoning + 100 content chunks


# ---------------------------------------------------------------------------
# K2Think auth, models, recording
# ---------------------------------------------------------------------------


def test_token_checks(k2: K2ThinkEmulator) -> None:
    url = k2.url(CHAT_PATH)

    def call(
        headers: dict[str, str], body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        status, hdrs, raw = run(lambda s: post(s, url, body or chat_body(stream=False), headers))
        return status, hdrs, json.loads(raw) if raw.startswith(b"{") else raw

    assert call({})[::2] == (401, {"detail": "Not authenticated"})
    assert call({"Authorization": "Bearer junk"})[::2] == (401, {"detail": "401 Unauthorized"})
    expired = k2.mint_token(exp_in=-10)
    assert call({"Authorization": f"Bearer {expired}"})[::2] == (
        401,
        {"detail": "401 Unauthorized"},
    )
    good = k2.mint_token()
    assert call({"Authorization": f"Bearer {good}"})[0] == 200
    assert call({"Cookie": f"token={good}"})[0] == 200
    assert jwt.decode(good, options={"verify_signature": False}).keys() == {"id", "exp"}

    expected = {"revoked": 401, "rate_limited": 429, "error500": 500, "unavailable": 503}
    for state, status in expected.items():
        token = k2.mint_token(state=state)
        got_status, headers, body = call({"Authorization": f"Bearer {token}"})
        assert got_status == status and "detail" in body
        if state == "rate_limited":
            assert headers["Retry-After"] == "30"
    k2.set_token_state(good, "revoked")
    assert call({"Authorization": f"Bearer {good}"})[::2] == (401, {"detail": "401 Unauthorized"})

    assert k2.used_tokens[:2] == [None, "junk"]  # rejected credentials are recorded too

    k2.accept_any_token = True
    assert call({"Authorization": "Bearer whatever"})[0] == 200
    bad_model = chat_body(stream=False, model="MBZUAI-IFM/K2-Think")
    assert call({"Authorization": "Bearer x"}, bad_model)[::2] == (
        400,
        {"detail": "Model not found"},
    )


def test_waf_and_session_ids(k2: K2ThinkEmulator) -> None:
    k2.accept_any_token = True
    k2.waf_require_cookie = True
    status, headers, raw = run(
        lambda s: post(s, k2.url(CHAT_PATH), chat_body(), {"Authorization": "Bearer t"})
    )
    assert status == 405 and headers["Content-Type"].startswith("text/html") and b"405" in raw
    both = {"Authorization": "Bearer t", "Cookie": "token=t"}
    assert run(lambda s: post(s, k2.url(CHAT_PATH), chat_body(), both))[0] == 200
    assert k2.waf_blocks == 1

    ids: dict[str, Any] = {"chat_id": "c", "id": "m", "session_id": "s"}
    status, _, raw = run(lambda s: post(s, k2.url(CHAT_PATH), chat_body(**ids), both))
    assert status == 200 and json.loads(raw)["status"] is True and "task_id" in json.loads(raw)
    k2.session_ids_mode = "reject"
    assert run(lambda s: post(s, k2.url(CHAT_PATH), chat_body(chat_id="c"), both))[0] == 400


def test_recording(k2: K2ThinkEmulator) -> None:
    token = k2.mint_token()
    headers = {
        "Authorization": f"Bearer {token}",
        "Cookie": f"token={token}",
        "Origin": "https://www.k2think.ai",
        "User-Agent": "UA/1.0",
    }
    run(lambda s: post(s, k2.url(CHAT_PATH), chat_body(params={}, temperature=0.3), headers))
    (req,) = k2.chat_requests
    assert req.method == "POST" and req.path == CHAT_PATH
    assert req.headers["origin"] == "https://www.k2think.ai"
    assert req.headers["User-Agent"] == "UA/1.0"
    assert req.cookies["token"] == token and req.token == token
    assert req.json["stream"] is True and req.json["temperature"] == 0.3
    assert not {"chat_id", "id", "session_id"} & req.json.keys()
    assert k2.used_tokens == [token]


def test_models_endpoint(k2: K2ThinkEmulator) -> None:
    token = k2.mint_token()

    async def get(s: aiohttp.ClientSession, auth: bool) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if auth else {}
        async with s.get(k2.url("/api/models"), headers=headers) as resp:
            return resp.status, await resp.json()

    status, body = run(lambda s: get(s, True))
    assert status == 200 and body["data"][0]["id"] == DEFAULT_MODEL
    assert body["data"][0]["owned_by"] == "MBZUAI"
    assert run(lambda s: get(s, False))[0] == 401


# ---------------------------------------------------------------------------
# K2Think sign-in
# ---------------------------------------------------------------------------


def _signin(
    emu: K2ThinkEmulator, email: str, password: str
) -> tuple[int, dict[str, Any], str | None]:
    async def go(s: aiohttp.ClientSession) -> tuple[int, dict[str, Any], str | None]:
        async with s.post(
            emu.url(SIGNIN_PATH), json={"email": email, "password": password}
        ) as resp:
            cookie = resp.cookies.get("token")
            if cookie is not None:
                assert "HttpOnly" in resp.headers["Set-Cookie"]
            return resp.status, await resp.json(), cookie.value if cookie else None

    return run(go)


@pytest.mark.parametrize("mode", ["both", "json", "cookie"])
def test_signin_modes(k2: K2ThinkEmulator, mode: str) -> None:
    k2.accounts = {"a@x.io": "pw"}
    k2.signin_token_in = mode
    status, body, cookie = _signin(k2, "a@x.io", "pw")
    assert status == 200
    assert body["token_type"] == "Bearer" and body["role"] == "user" and body["email"] == "a@x.io"
    assert ("token" in body) == (mode != "cookie")
    assert (cookie is not None) == (mode != "json")
    token = body.get("token") or cookie
    assert token is not None
    claims = jwt.decode(token, k2.jwt_secret, algorithms=["HS256"])
    assert claims["exp"] == body["expires_at"] and claims["id"] == body["id"]
    assert k2.token_state(token) == "valid"
    status, _, _ = run(
        lambda s: post(
            s, k2.url(CHAT_PATH), chat_body(stream=False), {"Authorization": f"Bearer {token}"}
        )
    )
    assert status == 200


def test_signin_failures_and_counts(k2: K2ThinkEmulator) -> None:
    k2.accounts = {"a@x.io": "pw", "b@x.io": "pw"}
    assert _signin(k2, "a@x.io", "wrong")[:2] == (400, {"detail": BAD_CREDENTIALS_DETAIL})
    k2.fail_signin("b@x.io", status=500, times=2)
    statuses = [_signin(k2, "b@x.io", "pw")[0] for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert k2.signin_attempts == {"a@x.io": 1, "b@x.io": 3}
    assert k2.signin_successes == {"b@x.io": 1}
    k2.set_account_state("b@x.io", "rate_limited")
    (token,) = k2.issued_tokens["b@x.io"]
    assert k2.token_state(token) == "rate_limited"
    assert k2.account_for(token) == "b@x.io"


# ---------------------------------------------------------------------------
# OpenAI-compatible emulator
# ---------------------------------------------------------------------------


def oai_body(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": HI, **extra}


def test_openai_models_and_api_key(oai: OpenAICompatEmulator) -> None:
    oai.api_key = "sk-secret"

    async def models(s: aiohttp.ClientSession) -> tuple[int, Any]:
        async with s.get(
            oai.url("/v1/models"), headers={"Authorization": "Bearer sk-secret"}
        ) as resp:
            return resp.status, await resp.json()

    status, body = run(models)
    assert status == 200 and [m["id"] for m in body["data"]] == ["fake-model"]
    status, _, raw = run(
        lambda s: post(
            s, oai.url("/v1/chat/completions"), oai_body(), {"Authorization": "Bearer sk-wrong-key"}
        )
    )
    assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
    status, _, raw = run(lambda s: post(s, oai.url("/v1/chat/completions"), oai_body()))
    assert status == 401 and json.loads(raw)["error"]["type"] == "invalid_request_error"


def test_openai_non_stream_and_stream(oai: OpenAICompatEmulator) -> None:
    url = oai.url("/v1/chat/completions")
    status, _, raw = run(lambda s: post(s, url, oai_body()))
    body = json.loads(raw)
    assert status == 200 and body["choices"][0]["message"]["content"] == ANSWER
    assert body["choices"][0]["finish_reason"] == "stop"

    oai.reasoning = "think first"
    _, _, raw = run(
        lambda s: post(s, url, oai_body(stream=True, stream_options={"include_usage": True}))
    )
    payloads = parse_sse(raw)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "think first"
    assert "".join(d.get("content", "") for d in deltas) == ANSWER

    _, _, raw = run(lambda s: post(s, url, oai_body(stream=True)))
    assert all("usage" not in json.loads(p) for p in parse_sse(raw)[:-1])


def test_openai_many_chunks(oai: OpenAICompatEmulator) -> None:
    oai.stream_chunks = 500
    oai.answer = "x" * 1000
    _, _, raw = run(lambda s: post(s, oai.url("/v1/chat/completions"), oai_body(stream=True)))
    contents = [json.loads(p)["choices"][0]["delta"].get("content") for p in parse_sse(raw)[:-1]]
    assert len([c for c in contents if c]) == 500


def test_openai_tool_calls(oai: OpenAICompatEmulator) -> None:
    oai.tool_calls = [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_time", "arguments": '{"tz": "UTC"}', "id": "call_fixed"},
    ]
    url = oai.url("/v1/chat/completions")
    _, _, raw = run(lambda s: post(s, url, oai_body()))
    message = json.loads(raw)["choices"][0]["message"]
    assert message["content"] is None
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather", "get_time"]
    assert json.loads(raw)["choices"][0]["finish_reason"] == "tool_calls"

    _, _, raw = run(lambda s: post(s, url, oai_body(stream=True)))
    chunks = [json.loads(p) for p in parse_sse(raw)[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for frag in chunk["choices"][0]["delta"].get("tool_calls", []):
            if "id" in frag:
                assert frag["type"] == "function" and "name" in frag["function"]
                calls[frag["index"]] = {
                    "id": frag["id"],
                    "name": frag["function"]["name"],
                    "args": "",
                }
            calls[frag["index"]]["args"] += frag["function"].get("arguments", "")
    assert json.loads(calls[0]["args"]) == {"city": "Paris"}
    assert calls[1]["id"] == "call_fixed" and json.loads(calls[1]["args"]) == {"tz": "UTC"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_responder_failures_and_recording(oai: OpenAICompatEmulator) -> None:
    oai.responder = lambda body: f"you said {body['messages'][-1]['content']}"
    oai.fail_next(1, status=429, headers={"Retry-After": "2"})
    url = oai.url("/v1/chat/completions")
    status, headers, raw = run(lambda s: post(s, url, oai_body()))
    assert status == 429 and headers["Retry-After"] == "2"
    assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    status, _, raw = run(lambda s: post(s, url, oai_body()))
    assert json.loads(raw)["choices"][0]["message"]["content"] == "you said hi"
    assert [r.path for r in oai.requests] == ["/v1/chat/completions"] * 2
    assert oai.requests[0].token is None and oai.requests[0].json["messages"] == HI


def test_openai_disconnect_detection(oai: OpenAICompatEmulator) -> None:
    oai.stream_chunks = 30
    oai.answer = "y" * 60
    oai.chunk_delay = 0.02

    async def read_one(s: aiohttp.ClientSession) -> None:
        async with s.post(oai.url("/v1/chat/completions"), json=oai_body(stream=True)) as resp:
            await resp.content.readline()

    run(read_one)
    assert oai.wait_for_disconnect(2.0)
    assert oai.completed_streams == 0


def test_openai_cli_entry_point() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.upstreams.openai_compat", "--port", "0", "--chunks", "20"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert base.startswith("http://127.0.0.1:")
        _, _, raw = run(lambda s: post(s, base + "/v1/chat/completions", oai_body(stream=True)))
        contents = [
            json.loads(p)["choices"][0]["delta"].get("content") for p in parse_sse(raw)[:-1]
        ]
        assert len([c for c in contents if c]) == 20
    finally:
        proc.terminate()
        proc.wait(5)


def test_split_size_cycles(oai: OpenAICompatEmulator) -> None:
    oai.split_writes = True
    oai.split_size = (1, 5, 2)

    async def read_chunks(s: aiohttp.ClientSession) -> list[bytes]:
        body = oai_body(stream=True)
        async with s.post(oai.url("/v1/chat/completions"), json=body) as resp:
            return [data async for data, _ in resp.content.iter_chunks() if data]

    chunks = run(read_chunks)
    assert [len(c) for c in chunks[:6]] == [1, 5, 2, 1, 5, 2]
    assert parse_sse(b"".join(chunks))[-1] == "[DONE]"


def test_k2think_cli_entry_point() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.upstreams.k2think", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        auth = {"Authorization": "Bearer anything"}
        status, _, raw = run(lambda s: post(s, base + CHAT_PATH, chat_body(stream=False), auth))
        assert status == 200 and json.loads(raw)["object"] == "chat.completion"
    finally:
        proc.terminate()
        proc.wait(5)
