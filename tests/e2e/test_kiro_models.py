"""Kiro's models through the real gateway: the static fallback, every spelling, the catalog read in the
background (after a renewal, retried, refreshed, with the login's profile), and context windows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.kiro_helpers import kiro_settings, wait_for
from tests.harness import GatewayServer
from tests.upstreams import KiroEmulator
from tests.upstreams.kiro_frames import KiroReply

StartGateway = Callable[..., GatewayServer]
HI: list[Any] = [{"role": "user", "content": "hi"}]
# The notes' client names (table 3.8, the 2026 update, JW's fallback list) → the id Kiro takes.
NOTES_NAMES = {
    "claude-sonnet-4-6": "claude-sonnet-4.6", "claude-opus-4-6": "claude-opus-4.6", "claude-opus-4-7": "claude-opus-4.7",
    "claude-opus-4-8": "claude-opus-4.8", "claude-sonnet-5": "claude-sonnet-5", "claude-opus-4.6": "claude-opus-4.6",
    "claude-3-7-sonnet-20250219": "claude-3.7-sonnet", "claude-3-7-sonnet-latest": "claude-3.7-sonnet",
    "deepseek-3.2": "deepseek-3.2", "glm-5": "glm-5", "minimax-m2.1": "minimax-m2.1", "minimax-m2.5": "minimax-m2.5",
    "qwen3-coder-next": "qwen3-coder-next",
}


def health(gateway: GatewayServer) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(gateway.base_url + "/health", timeout=5).json()["providers"]["kiro"]
    return state


def listed(gateway: GatewayServer) -> list[str]:
    return [m.id for m in gateway.openai().models.list()]


def sent_model(kiro_emu: KiroEmulator) -> str:
    model: str = kiro_emu.chat_requests[-1].json["conversationState"]["currentMessage"]["userInputMessage"]["modelId"]
    return model


@pytest.fixture
def social_file(kiro_emu: KiroEmulator, tmp_path: Path) -> Path:
    return kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", kiro_emu.add_account())


def test_newer_and_non_claude_models_are_served_when_the_catalog_does_not_answer(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, social_file: Path,
) -> None:
    kiro_emu.catalog_fails = True
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=social_file))
    client = gateway.openai()
    for name, upstream in NOTES_NAMES.items():
        assert client.chat.completions.create(model=name, messages=HI).model == name
        assert sent_model(kiro_emu) == upstream
    message = gateway.anthropic().messages.create(model="claude-opus-4-6", max_tokens=100, messages=HI)
    assert message.content and sent_model(kiro_emu) == "claude-opus-4.6"
    assert set(NOTES_NAMES.values()) <= set(listed(gateway)) and kiro_emu.rejections == []
    assert health(gateway)["discovery"].startswith("failed: ")


def test_the_catalog_skipped_at_start_for_an_expired_token_is_read_after_its_renewal(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path,
) -> None:
    kiro_emu.catalog_extra = [{"modelId": "claude-opus-4.9"}]
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", kiro_emu.add_account(), expired=True)
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))
    assert gateway.openai().chat.completions.create(model="claude-sonnet-4.5", messages=HI)  # renews the login
    wait_for(lambda: "claude-opus-4.9" in listed(gateway), timeout=10)
    assert gateway.openai().chat.completions.create(model="claude-opus-4-9", messages=HI).model == "claude-opus-4-9"
    assert sent_model(kiro_emu) == "claude-opus-4.9" and health(gateway)["discovery"] == "ok"


def test_a_failed_catalog_read_is_retried_in_the_background_and_health_says_so(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, social_file: Path,
) -> None:
    kiro_emu.catalog_fails = True
    kiro_emu.catalog_extra = [{"modelId": "claude-opus-4.9"}]
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=social_file))
    assert health(gateway)["discovery"].startswith("failed: ") and "claude-opus-4.9" not in listed(gateway)
    with pytest.raises(openai.NotFoundError) as caught:
        gateway.openai().chat.completions.create(model="claude-opus-4.9", messages=HI)
    assert "kiro (failed)" in caught.value.message
    kiro_emu.catalog_fails = False
    wait_for(lambda: "claude-opus-4.9" in listed(gateway), timeout=15)
    assert health(gateway)["discovery"] == "ok"
    assert gateway.openai().chat.completions.create(model="claude-opus-4.9", messages=HI).choices[0].message.content


def test_the_catalog_is_read_again_periodically(kiro_emu: KiroEmulator, start_gateway: StartGateway, social_file: Path) -> None:
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=social_file, kiro_models_refresh=0.2))
    assert "claude-opus-4.9" not in listed(gateway) and health(gateway)["discovery"] == "ok"
    kiro_emu.catalog_extra = [{"modelId": "claude-opus-4.9"}]
    wait_for(lambda: "claude-opus-4.9" in listed(gateway), timeout=10)


def test_an_idc_login_reads_the_catalog_with_the_profile_it_looked_up(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, tmp_path: Path,
) -> None:
    account = kiro_emu.add_account("idc", profile_arn="arn:aws:codewhisperer:us-east-1:111122223333:profile/IDC")
    path = kiro_emu.write_idc_files(tmp_path / "kiro-auth-token.json", account)
    kiro_emu.catalog_needs_profile = True  # "profileArn is required" on every call since 2026
    kiro_emu.catalog_extra = [{"modelId": "claude-opus-4.9"}]
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=path))
    assert "claude-opus-4.9" in listed(gateway) and health(gateway)["discovery"] == "ok"
    [catalog] = kiro_emu.requests_to("/ListAvailableModels")
    assert catalog.query == {"origin": "AI_EDITOR", "profileArn": account.profile_arn}


def test_sonnet_and_opus_from_4_6_on_count_the_context_meter_against_a_million_tokens(
    kiro_emu: KiroEmulator, start_gateway: StartGateway, social_file: Path,
) -> None:
    kiro_emu.catalog_extra = [{"modelId": "claude-sonnet-4.6"}, {"modelId": "claude-opus-4.6"},
                              {"modelId": "claude-opus-4.7", "tokenLimits": {"maxInputTokens": 500_000}}]
    kiro_emu.reply = KiroReply(text="ok", context_percent=10.0)
    gateway = start_gateway(**kiro_settings(kiro_emu, kiro_token_file=social_file))
    client = gateway.openai()

    def prompt_tokens(model: str) -> int:
        usage = client.chat.completions.create(model=model, messages=HI).usage
        assert usage is not None
        return int(usage.prompt_tokens)

    assert prompt_tokens("claude-sonnet-4-6") == prompt_tokens("claude-opus-4.6") == 100_000  # 10 % of 1 M
    assert prompt_tokens("claude-opus-4.8") == 100_000  # from the static list, no catalog entry
    assert prompt_tokens("claude-opus-4.7") == 50_000  # the catalog's own limit wins
    assert prompt_tokens("claude-sonnet-4.5") == prompt_tokens("claude-haiku-4.5") == 20_000  # 10 % of 200 k
    message = gateway.anthropic().messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=HI)
    assert message.usage.input_tokens == 100_000
