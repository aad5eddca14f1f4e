"""Every secret the settings hold is redacted by value: keys, tokens, API keys, proxy credentials."""

from __future__ import annotations

from pathlib import Path

from chatbridge.config import Settings
from chatbridge.core.secrets import redact
from chatbridge.state.keys import load_or_create_key

SECRETS = {
    "valid_api_key": "client-key-one-1234,client-key-two-5678",
    "admin_api_key": "admin-key-abcdefgh",
    "k2think_token": "k2think-token-ijklmnop",
    "openai_compat_api_key": "sk-upstream-qrstuvwxyz",
}


def test_every_configured_secret_is_redacted_by_value(tmp_path: Path) -> None:
    Settings(_env_file=None, proxy_url="http://proxyuser:pr%40xy-pass-word@127.0.0.1:3128",  # type: ignore[call-arg]
             openai_compat_base_url="http://127.0.0.1:1/v1", **SECRETS)
    values = ["client-key-one-1234", "client-key-two-5678", "admin-key-abcdefgh", "k2think-token-ijklmnop",
              "sk-upstream-qrstuvwxyz", "pr%40xy-pass-word", "pr@xy-pass-word"]
    for value in values:
        echoed = f"upstream said: {value} is not valid"
        assert value not in redact(echoed), value


def test_generated_keys_are_redacted_by_value(tmp_path: Path) -> None:
    created = load_or_create_key(tmp_path, "api_key", "sk-cb-")
    assert created.value not in redact(f"key {created.value}")
    (tmp_path / "admin_key").write_text("sk-admin-stored-before-this-start\n")
    loaded = load_or_create_key(tmp_path, "admin_key", "sk-admin-")
    assert loaded.value not in redact(f"key {loaded.value}")
