"""Models, health, docs, raw wire format, and what a fresh start prints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson

from tests.harness import GatewayProcess, GatewayServer
from tests.upstreams import K2ThinkEmulator

MODEL = "MBZUAI-IFM/K2-Think-v2"


def test_models_list_and_retrieve(k2_gateway: Callable[..., GatewayServer]) -> None:
    client = k2_gateway(guest=True).openai()
    ids = [m.id for m in client.models.list()]
    assert ids == ["MBZUAI-IFM/K2-Think-v2", "MBZUAI-IFM/K2-Think-v2-nothink"]
    model = client.models.retrieve("MBZUAI-IFM/K2-Think-v2-nothink")
    assert model.id == "MBZUAI-IFM/K2-Think-v2-nothink" and model.owned_by == "MBZUAI" and model.object == "model"
    assert client.models.retrieve("MBZUAI-IFM/K2-Think").id == "MBZUAI-IFM/K2-Think"


def test_health_and_docs(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    with gw.http() as http:
        health = http.get("/health").json()
        docs = http.get("/docs")
        spec = http.get("/openapi.json").json()
    assert health["status"] == "ok"
    k2 = health["providers"]["k2think"]
    assert k2["mode"] == "token" and k2["credentials"]["total"] == 1 and k2["credentials"]["active"] == 1
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    body = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("ChatCompletionRequest")
    assert "messages" in spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]


def test_every_response_carries_a_request_id_and_the_overhead_header(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    hi = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with gw.http() as http:
        responses = {
            "chat": http.post("/v1/chat/completions", json=hi),
            "bad json": http.post("/v1/chat/completions", content=b"{nope"),
            "unknown model": http.post("/v1/chat/completions", json={**hi, "model": "nope"}),
            "wrong method": http.get("/v1/chat/completions"),
            "models": http.get("/v1/models"),
            "health": http.get("/health"),
            "docs": http.get("/docs"),
            "unknown route": http.get("/v2/nothing"),
            "admin without its key": http.get("/admin/pools"),
            "no key": http.post("/v1/chat/completions", json=hi, headers={"Authorization": ""}),
        }
        k2emu.fail_next(10, status=503)
        responses["upstream failing"] = http.post("/v1/chat/completions", json=hi)
    statuses = {name: r.status_code for name, r in responses.items()}
    assert statuses == {"chat": 200, "bad json": 400, "unknown model": 404, "wrong method": 405, "models": 200,
                        "health": 200, "docs": 200, "unknown route": 404, "admin without its key": 401,
                        "no key": 401, "upstream failing": 503}  # an overloaded upstream: OpenAI's 503
    for name, response in responses.items():
        assert response.headers["x-request-id"], name
        assert float(response.headers["x-chatbridge-overhead-ms"]) >= 0, name
    with gw.http() as http:
        echoed = http.get("/health", headers={"x-request-id": "trace-me-42"})
    assert echoed.headers["x-request-id"] == "trace-me-42"


def test_raw_stream_wire_format(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True},
        })
    assert response.headers["content-type"].startswith("text/event-stream")
    assert float(response.headers["x-chatbridge-overhead-ms"]) >= 0
    assert response.text.endswith("data: [DONE]\n\n")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") and "\nevent:" not in e for e in events)
    chunks = [orjson.loads(e[6:]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    assert chunks[0]["id"].startswith("chatcmpl-")
    finish = chunks[-2]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])


def test_non_streamed_json_and_overhead_header(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert response.headers["content-type"] == "application/json"
    assert float(response.headers["x-chatbridge-overhead-ms"]) >= 0
    assert response.headers["x-request-id"]
    body = response.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"


def test_fresh_start_prints_providers_and_a_generated_key_once(k2emu: K2ThinkEmulator, tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "K2THINK_BASE_URL": k2emu.base_url, "LOG_LEVEL": "INFO"}
    first = GatewayProcess(env, tmp_path).start()
    first.stop()
    key = (tmp_path / "data" / "api_key").read_text().strip()
    assert "guest mode, no tokens configured" in first.output
    assert "listening on http://127.0.0.1:" in first.output
    assert first.output.count(key) == 1
    first.log_path.unlink()
    second = GatewayProcess(env, tmp_path).start()
    try:
        import httpx

        ok = httpx.get(second.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
    finally:
        second.stop()
    assert key not in second.output and key[:6] in second.output


def test_token_mode_start_never_prints_the_token(k2emu: K2ThinkEmulator, tmp_path: Path) -> None:
    token = k2emu.mint_token()
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text(f"# my tokens\n{token}\n\n")
    env = {"DATA_DIR": str(tmp_path / "data"), "K2THINK_BASE_URL": k2emu.base_url, "TOKENS_FILE": str(tokens_file),
           "VALID_API_KEY": "sk-client-secret-key-123456"}
    process = GatewayProcess(env, tmp_path).start()
    try:
        import openai

        client = openai.OpenAI(base_url=process.base_url + "/v1", api_key="sk-client-secret-key-123456")
        assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}]).choices[0].message.content
    finally:
        process.stop()
    assert "token mode, 1 credential" in process.output
    assert token not in process.output and "sk-client-secret-key-123456" not in process.output


def test_no_usage_chunk_unless_asked(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True})
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [orjson.loads(e[6:]) for e in events[:-1]]
    assert all(len(c["choices"]) == 1 and "usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_head_is_answered_wherever_get_is_with_the_headers_only(k2_gateway: Callable[..., GatewayServer]) -> None:
    gw = k2_gateway()
    with gw.http() as http:
        health, models, model = http.head("/health"), http.head("/v1/models"), http.head(f"/v1/models/{MODEL}")
        refused = http.head("/v1/models", headers={"Authorization": "Bearer sk-wrong"})
        chat = http.head("/v1/chat/completions")
        spec = http.get("/openapi.json").json()
        get_length = len(http.get("/health").content)
    assert (health.status_code, models.status_code, model.status_code) == (200, 200, 200)
    assert health.content == b"" and health.headers["content-type"].startswith("application/json")
    assert 0 < int(health.headers["content-length"]) <= get_length + 64  # the GET answer's length, not 0
    assert refused.status_code == 401  # HEAD needs the key wherever GET does
    assert chat.status_code == 405 and chat.headers["allow"] == "POST"
    assert not any("head" in operations for operations in spec["paths"].values())


def test_readme_shows_the_lines_a_first_start_prints_in_their_order(k2emu: K2ThinkEmulator, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("The first\nstart prints (keys shortened here):\n\n```text\n", 1)[1].split("```", 1)[0]

    def heads(lines: list[str]) -> list[str]:
        """Each line's leading words (`kimi:`, `client key:`), the keys' own lines left out."""
        return [line.split(":", 1)[0] for line in lines if line and not line.startswith((" ", "20"))]

    env = {"DATA_DIR": str(tmp_path / "data"), "K2THINK_BASE_URL": k2emu.base_url, "LOG_LEVEL": "INFO"}
    first = GatewayProcess(env, tmp_path).start()
    first.stop()
    printed = first.output.split("Started server process", 1)[0].splitlines()
    assert heads(printed) == heads(block.splitlines())
