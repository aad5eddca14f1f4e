"""Tool schemas are attacker input: a hostile one gets a 400 naming the tool, and `/health` never waits.

Real `openai` SDK against a running gateway in front of the K2Think emulator, whose scripted
model calls the hostile tool, so that validation (where the old code fetched `$ref` URLs and
ran `re`) is really reached.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, Reply

MODEL = "MBZUAI-IFM/K2-Think-v2"
ASK = [{"role": "user", "content": "Look it up"}]
HEALTH_WITHIN = 5.0  # seconds: generous for a loaded machine; a blocked loop takes far longer


def tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": "A tool", "parameters": parameters}}


def calling(name: str, *arguments: dict[str, Any] | str) -> Callable[[dict[str, Any]], Reply]:
    """A scripted model that calls `name`, with the next of `arguments` (or JSON text) on each round."""
    rounds = iter(arguments)

    def respond(body: dict[str, Any]) -> Reply:
        system = "\n".join(str(m["content"]) for m in body["messages"] if m["role"] == "system")
        token = re.search(r"<tool_call_([a-z0-9]+)>", system)
        assert token is not None
        given = next(rounds)
        text = given if isinstance(given, str) else json.dumps(given)
        call = f'{{"name": {json.dumps(name)}, "arguments": {text}}}'
        return Reply(answer=f"<tool_call_{token.group(1)}>\n{call}\n</tool_call_{token.group(1)}>")

    return respond


@pytest.fixture
def tarpit() -> Iterator[tuple[str, list[socket.socket]]]:
    """A URL whose server accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/schema.json", accepted
    server.close()
    for conn in accepted:
        conn.close()


def health_while(gw: GatewayServer, work: Callable[[], Any]) -> tuple[Future[Any], list[float]]:
    """Run `work` in the background and time `/health` while it runs (and at least three times)."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(work)
    timings: list[float] = []
    with httpx.Client(base_url=gw.base_url, timeout=HEALTH_WITHIN) as http:
        while not future.done() or len(timings) < 3:
            started = time.monotonic()
            try:
                assert http.get("/health").status_code == 200
            except httpx.TimeoutException:
                pass  # counted as too slow below
            timings.append(time.monotonic() - started)
            time.sleep(0.05)
    pool.shutdown(wait=True)
    return future, timings


def test_a_ref_to_a_url_is_a_400_naming_the_tool_and_nothing_is_fetched(
    k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], tarpit: tuple[str, list[socket.socket]],
) -> None:
    url, accepted = tarpit
    gw = k2_gateway()
    k2emu.responder = calling("fetch", {"a": 1}, {"a": 1})
    parameters = {"type": "object", "properties": {"a": {"$ref": url}}}

    def ask() -> Any:
        return gw.openai(timeout=60).chat.completions.create(model=MODEL, messages=ASK, tools=[tool("fetch", parameters)])

    future, timings = health_while(gw, ask)
    with pytest.raises(openai.BadRequestError) as caught:
        future.result()
    assert caught.value.param == "tools[0].function.parameters"
    assert "'fetch'" in caught.value.message and "points outside the schema" in caught.value.message
    assert "Traceback" not in str(caught.value.body)
    assert max(timings) < HEALTH_WITHIN and accepted == []


def test_a_ref_to_nowhere_is_a_400_not_a_500(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.responder = calling("lookup", {"a": 1}, {"a": 1})
    parameters = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        k2_gateway().openai().chat.completions.create(model=MODEL, messages=ASK, tools=[tool("lookup", parameters)])
    assert "'lookup'" in caught.value.message and "'#/$defs/missing' does not resolve" in caught.value.message


def test_a_catastrophic_pattern_does_not_block_health(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    # With Python's re, this argument costs about 2**30 steps: a minute holding the GIL.
    k2emu.responder = calling("spell", {"word": "a" * 30 + "!"}, {"word": "aaa"})
    parameters = {"type": "object", "properties": {"word": {"type": "string", "pattern": "^(a+)+$"}}, "required": ["word"]}

    def ask() -> Any:
        return gw.openai(timeout=60).chat.completions.create(model=MODEL, messages=ASK, tools=[tool("spell", parameters)])

    future, timings = health_while(gw, ask)
    (call,) = future.result().choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"word": "aaa"}  # the repair round fixed it
    repair = k2emu.chat_requests[-1].json["messages"][-1]["content"]
    assert "does not match '^(a+)+$'" in repair
    assert max(timings) < HEALTH_WITHIN


def test_a_pattern_re2_cannot_run_is_a_400_naming_the_tool(k2_gateway: Callable[..., GatewayServer]) -> None:
    parameters = {"type": "object", "properties": {"pw": {"type": "string", "pattern": "^(?=.*[A-Z]).{8,}$"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        k2_gateway().openai().chat.completions.create(model=MODEL, messages=ASK, tools=[tool("login", parameters)])
    assert caught.value.param == "tools[0].function.parameters"
    assert "'login'" in caught.value.message and "not supported" in caught.value.message


@pytest.mark.parametrize("depth", [120, 180])
def test_a_deeply_nested_schema_is_a_400_not_a_500(k2_gateway: Callable[..., GatewayServer], depth: int) -> None:
    parameters: dict[str, Any] = {"type": "object"}
    current = parameters
    for _ in range(depth):
        current["not"] = {}
        current = current["not"]
    with pytest.raises(openai.BadRequestError) as caught:
        k2_gateway().openai().chat.completions.create(model=MODEL, messages=ASK, tools=[tool("deep", parameters)])
    assert "'deep'" in caught.value.message and "nests deeper than" in caught.value.message


def test_deeply_nested_arguments_go_back_to_the_model(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    deep = '{"value": ' + "[" * 5000 + "]" * 5000 + "}"  # Python's json raises RecursionError on it
    k2emu.responder = calling("store", deep, {"value": [1]})
    parameters = {"type": "object", "properties": {"value": {}}}
    reply = k2_gateway().openai().chat.completions.create(model=MODEL, messages=ASK, tools=[tool("store", parameters)])
    (call,) = reply.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"value": [1]}
    assert "nests deeper than" in k2emu.chat_requests[-1].json["messages"][-1]["content"]


def test_a_big_new_schema_is_checked_off_the_event_loop(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    k2emu.reply = Reply(answer="No tool needed.")
    properties = {f"field_{i}": {"type": "string", "description": f"Field {i}", "enum": ["a", "b", str(i)]} for i in range(1200)}
    parameters = {"type": "object", "properties": properties}

    def ask() -> Any:
        return gw.openai(timeout=120).chat.completions.create(model=MODEL, messages=ASK, tools=[tool("form", parameters)])

    started = time.monotonic()
    future, timings = health_while(gw, ask)
    assert future.result().choices[0].message.content == "No tool needed."
    took = time.monotonic() - started  # mostly the schema check
    print(f"request {took:.2f} s, slowest /health {max(timings):.3f} s")
    assert max(timings) < max(0.5, took / 3)
