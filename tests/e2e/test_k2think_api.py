"""K2-Think's official API (api.k2think.ai) as a ready preset, and `<think>` parting on OpenAI-compatible upstreams.

The emulator stands in for the API: OpenAI's protocol with a key, answers whose reasoning arrives
in `reasoning_content`, in `<think>` tags inside `content`, or both (tags that leak).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator, OpenAICompatEmulator

HI = [{"role": "user", "content": "Why is the sky blue?"}]
MODEL = "MBZUAI-IFM/K2-Think-v2"
KEY = "k2-api-key-0123456789abcdef"


@pytest.fixture
def api_gateway(compat_emu: OpenAICompatEmulator, k2emu: K2ThinkEmulator,
                start_gateway: Callable[..., GatewayServer]) -> Callable[..., GatewayServer]:
    """The preset pointed at the emulator, beside the web provider in guest mode (which must not answer)."""
    compat_emu.api_key = KEY
    compat_emu.models = [MODEL]

    def start(**overrides: Any) -> GatewayServer:
        return start_gateway(k2think_api_key=KEY, k2think_api_base_url=compat_emu.base_url + "/v1",
                             k2think_base_url=k2emu.base_url, **overrides)

    return start


def _streamed(gateway: GatewayServer, model: str) -> tuple[str, str]:
    reasoning, content = [], []
    for chunk in gateway.openai().chat.completions.create(model=model, messages=HI, stream=True):  # type: ignore[arg-type]
        for choice in chunk.choices:
            reasoning.append(getattr(choice.delta, "reasoning_content", None) or "")
            content.append(choice.delta.content or "")
    return "".join(reasoning), "".join(content)


@pytest.mark.parametrize(("reasoning", "answer"), [
    (None, "<think>Rayleigh scattering.</think>Short wavelengths scatter most."),  # tags in content
    ("Rayleigh scattering.", "</think>\n\nShort wavelengths scatter most."),  # native reasoning, a closing tag leaks
])
def test_the_official_api_serves_k2think_with_its_reasoning_parted(
    api_gateway: Callable[..., GatewayServer], compat_emu: OpenAICompatEmulator, k2emu: K2ThinkEmulator,
    reasoning: str | None, answer: str,
) -> None:
    compat_emu.reasoning, compat_emu.answer = reasoning, answer
    gateway = api_gateway()
    models = {m.id: m.owned_by for m in gateway.openai().models.list()}
    assert models[MODEL] == "k2think-api" and models[MODEL + "-nothink"] == "k2think-api"

    message = gateway.openai().chat.completions.create(model=MODEL, messages=HI).choices[0].message  # type: ignore[arg-type]
    assert message.reasoning_content == "Rayleigh scattering."  # type: ignore[attr-defined]
    assert message.content.strip() == "Short wavelengths scatter most."  # type: ignore[union-attr]
    streamed_reasoning, streamed_content = _streamed(gateway, MODEL)
    assert streamed_reasoning == "Rayleigh scattering."
    assert streamed_content.strip() == "Short wavelengths scatter most."

    sent = compat_emu.last_request
    assert sent is not None and sent.headers["Authorization"] == f"Bearer {KEY}" and sent.json["model"] == MODEL
    assert k2emu.requests == [], "the web chat must not be asked while the official API serves the model"


def test_a_plain_answer_from_the_official_api_is_the_answer_only(
    api_gateway: Callable[..., GatewayServer], compat_emu: OpenAICompatEmulator,
) -> None:
    compat_emu.reasoning, compat_emu.answer = None, "Short wavelengths scatter most."
    gateway = api_gateway()
    message = gateway.openai().chat.completions.create(model=MODEL, messages=HI).choices[0].message  # type: ignore[arg-type]
    assert message.content == "Short wavelengths scatter most."
    assert not getattr(message, "reasoning_content", None)
    assert _streamed(gateway, MODEL) == ("", "Short wavelengths scatter most.")


def test_nothink_and_the_older_id_go_to_the_official_api_too(
    api_gateway: Callable[..., GatewayServer], compat_emu: OpenAICompatEmulator,
) -> None:
    compat_emu.reasoning, compat_emu.answer = "Rayleigh scattering.", "Blue scatters most."
    gateway = api_gateway()
    message = gateway.openai().chat.completions.create(model=MODEL + "-nothink", messages=HI).choices[0].message  # type: ignore[arg-type]
    assert message.content == "Blue scatters most." and not getattr(message, "reasoning_content", None)
    assert compat_emu.last_request is not None and compat_emu.last_request.json["model"] == MODEL
    older = gateway.openai().chat.completions.create(model="MBZUAI-IFM/K2-Think", messages=HI)  # type: ignore[arg-type]
    assert older.choices[0].message.content == "Blue scatters most."
    reply = anthropic.Anthropic(base_url=gateway.base_url, api_key=gateway.api_key, max_retries=0).messages.create(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "Why is the sky blue?"}])
    assert [b.text for b in reply.content if b.type == "text"] == ["Blue scatters most."]


def test_without_the_key_the_web_chat_serves_k2think_and_the_preset_says_how_to_enable_it(
    k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer],
) -> None:
    gateway = start_gateway(k2think_base_url=k2emu.base_url)
    models = {m.id: m.owned_by for m in gateway.openai().models.list()}
    assert models[MODEL] != "k2think-api"
    assert gateway.openai().chat.completions.create(model=MODEL, messages=HI).choices[0].message.content  # type: ignore[arg-type]
    assert k2emu.requests, "the web chat answers when no API key is set"
    assert "K2THINK_API_KEY" in gateway.runtime.disabled["k2think-api"]


def test_split_reasoning_parts_think_tags_of_any_openai_compatible_upstream(
    compat_emu: OpenAICompatEmulator, start_gateway: Callable[..., GatewayServer],
) -> None:
    compat_emu.answer = "<think>Two and two.</think>Four."
    plain = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", k2think_enabled=False)
    assert plain.openai().chat.completions.create(model="fake-model", messages=HI).choices[0].message.content == (  # type: ignore[arg-type]
        "<think>Two and two.</think>Four.")  # off by default: content as the upstream sent it
    parted = start_gateway(openai_compat_base_url=compat_emu.base_url + "/v1", k2think_enabled=False,
                           openai_compat_split_reasoning=True)
    message = parted.openai().chat.completions.create(model="fake-model", messages=HI).choices[0].message  # type: ignore[arg-type]
    assert (message.reasoning_content, message.content) == ("Two and two.", "Four.")  # type: ignore[attr-defined]
    assert _streamed(parted, "fake-model") == ("Two and two.", "Four.")
