"""`response_format` through the gateway: emulated on K2Think, forwarded to OpenAI-compatible upstreams.

Clients are the real `openai` SDK (its `parse`/`stream` helpers with a pydantic model, and
`json_object`) and LangChain's `with_structured_output`, whose default asks for `json_schema`.
The scripted K2Think model answers the way models do: prose unless told to write JSON, and
JSON wrapped in a sentence or a code fence now and then.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator, Reply

MODEL = "MBZUAI-IFM/K2-Think-v2"
ASK = [{"role": "user", "content": "What is the capital of France, and how many people live there?"}]
PARIS = {"city": "Paris", "population": 2_100_000}


class City(BaseModel):
    city: str
    population: int


def system_of(body: dict[str, Any]) -> str:
    return "\n".join(str(m["content"]) for m in body["messages"] if m["role"] == "system")


def model(*answers: str) -> Callable[[dict[str, Any]], Reply]:
    """Prose unless the system prompt asks for JSON with our fields; then the next of `answers`."""
    rounds = iter(answers)

    def respond(body: dict[str, Any]) -> Reply:
        system = system_of(body)
        if "JSON" not in system or ('"population"' not in system and "JSON object" not in system):
            return Reply(reasoning="Paris, about two million.", answer="The capital of France is Paris, with about 2.1 million people.")
        return Reply(reasoning="The user wants JSON.", answer=next(rounds))

    return respond


def test_the_sdk_parse_helper_gets_its_model(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.responder = model(json.dumps(PARIS))
    completion = k2_gateway().openai().chat.completions.parse(model=MODEL, messages=ASK, response_format=City)  # type: ignore[arg-type]
    message = completion.choices[0].message
    assert message.parsed == City(**PARIS) and json.loads(message.content or "") == PARIS
    assert completion.choices[0].finish_reason == "stop"
    sent = k2emu.chat_requests[-1].json
    assert "response_format" not in sent and '"population"' in system_of(sent)  # the schema went into the prompt


def test_a_streamed_answer_is_held_until_valid_and_reasoning_streams(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.responder = model("Here you go:\n```json\n" + json.dumps(PARIS, indent=2) + "\n```")
    k2emu.split_writes, k2emu.split_size = True, (3, 1, 7)
    client = k2_gateway().openai()
    with client.chat.completions.stream(model=MODEL, messages=ASK, response_format=City) as stream:  # type: ignore[arg-type]
        events = list(stream)
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == City(**PARIS)
    content = [e.delta for e in events if e.type == "content.delta"]
    assert "".join(content) == json.dumps(PARIS, indent=2)  # the JSON alone: no sentence, no fence
    reasoning = [i for i, e in enumerate(events) if e.type == "chunk" and e.chunk.choices
                 and (e.chunk.choices[0].delta.model_extra or {}).get("reasoning_content")]
    first_content = next(i for i, e in enumerate(events) if e.type == "content.delta" and e.delta)
    assert reasoning and reasoning[0] < first_content  # reasoning streamed while the answer was held


def test_a_wrong_answer_gets_one_repair_round(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.responder = model('{"city": "Paris", "population": "about two million"}', json.dumps(PARIS))
    completion = k2_gateway().openai().chat.completions.parse(model=MODEL, messages=ASK, response_format=City)  # type: ignore[arg-type]
    assert completion.choices[0].message.parsed == City(**PARIS)
    repair = k2emu.chat_requests[-1].json["messages"]
    assert repair[-2]["role"] == "assistant" and "about two million" in repair[-2]["content"]
    assert "answer.population: 'about two million' is not of type 'integer'" in repair[-1]["content"]
    assert len(k2emu.chat_requests) == 2


def test_an_answer_still_wrong_after_the_repair_is_delivered_as_written(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    k2emu.responder = model('{"city": "Paris"}', '{"city": "Paris", "people": 2}')
    reply = k2_gateway().openai().chat.completions.create(
        model=MODEL, messages=ASK,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "City", "schema": City.model_json_schema()}},
    )
    assert json.loads(reply.choices[0].message.content or "") == {"city": "Paris", "people": 2}
    assert len(k2emu.chat_requests) == 2  # one repair round, no more


@pytest.mark.parametrize("stream", [False, True])
def test_json_object_mode(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer], stream: bool) -> None:
    k2emu.responder = model('Sure! {"city": "Paris", "population": 2100000} Anything else?')
    client = k2_gateway().openai()
    request: dict[str, Any] = {"model": MODEL, "messages": ASK, "response_format": {"type": "json_object"}}
    if stream:
        chunks = list(client.chat.completions.create(**request, stream=True))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        content = client.chat.completions.create(**request).choices[0].message.content or ""
    assert json.loads(content) == PARIS


def test_langchain_structured_output(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    chat_openai = pytest.importorskip("langchain_openai").ChatOpenAI
    gw = k2_gateway()
    k2emu.responder = model(json.dumps(PARIS), "```json\n" + json.dumps(PARIS) + "\n```")
    llm = chat_openai(model=MODEL, base_url=gw.base_url + "/v1", api_key=gw.api_key, max_retries=0)
    assert llm.with_structured_output(City).invoke("Capital of France?") == City(**PARIS)  # json_schema, the default
    raw = llm.with_structured_output(City, method="json_mode", include_raw=True).invoke("Capital of France, as JSON?")
    assert raw["parsed"] == City(**PARIS) and raw["parsing_error"] is None


def test_an_invalid_schema_is_a_400(k2_gateway: Callable[..., GatewayServer]) -> None:
    client = k2_gateway().openai()
    for schema, expected in (
        ({"type": "object", "properties": {"a": {"type": "strin"}}}, "at 'schema.properties.a.type'"),
        ({"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}, "points outside the schema"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model=MODEL, messages=ASK,  # type: ignore[arg-type]
                response_format={"type": "json_schema", "json_schema": {"name": "Thing", "schema": schema}},  # type: ignore[typeddict-item]
            )
        assert caught.value.param == "response_format.json_schema.schema" and expected in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, response_format={"type": "json_schema"})  # type: ignore[arg-type, typeddict-item]
    assert caught.value.param == "response_format.json_schema"


def test_an_openai_compatible_upstream_gets_response_format_itself(
    compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer],
) -> None:
    compat_emu.answer = json.dumps(PARIS)
    gw = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", k2think_enabled=False)
    completion = gw.openai().chat.completions.parse(model="fake-model", messages=ASK, response_format=City)  # type: ignore[arg-type]
    assert completion.choices[0].message.parsed == City(**PARIS)
    sent = compat_emu.last_request
    assert sent is not None and sent.json["response_format"]["type"] == "json_schema"
    assert sent.json["response_format"]["json_schema"]["name"] == "City"
    assert sent.json["response_format"]["json_schema"]["schema"]["required"] == ["city", "population"]
    assert all("Response format" not in str(m["content"]) for m in sent.json["messages"])  # nothing emulated


def test_tools_and_a_response_format_together(k2emu: K2ThinkEmulator, k2_gateway: Callable[..., GatewayServer]) -> None:
    """An agent step: the model calls a tool first (not held to the format), then answers in it."""
    import re

    def respond(body: dict[str, Any]) -> Reply:
        system, last = system_of(body), str(body["messages"][-1]["content"])
        assert '"population"' in system and "to call a tool, use the tool call format" in system
        if "<tool_result_" in last:
            return Reply(answer=json.dumps(PARIS))
        token = re.search(r"<tool_call_([a-z0-9]+)>", system)
        assert token is not None
        call = json.dumps({"name": "census", "arguments": {"city": "Paris"}})
        return Reply(answer=f"<tool_call_{token.group(1)}>\n{call}\n</tool_call_{token.group(1)}>")

    k2emu.responder = respond
    client = k2_gateway().openai()
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
    tools = [{"type": "function", "function": {"name": "census", "parameters": parameters, "strict": True}}]
    messages: list[Any] = list(ASK)
    first = client.chat.completions.parse(model=MODEL, messages=messages, tools=tools, response_format=City)  # type: ignore[arg-type]
    (call,) = first.choices[0].message.tool_calls  # type: ignore[misc]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "census"
    messages += [first.choices[0].message.model_dump(exclude_none=True, exclude={"parsed"}),
                 {"role": "tool", "tool_call_id": call.id, "content": "2,100,000 people"}]
    final = client.chat.completions.parse(model=MODEL, messages=messages, tools=tools, response_format=City)  # type: ignore[arg-type]
    assert final.choices[0].message.parsed == City(**PARIS)
