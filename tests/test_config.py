"""The configuration contract: documented defaults, and which K2Think paths derive from what."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from chatbridge.config import Settings


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_documented_defaults() -> None:
    settings = _settings()
    assert (settings.host, settings.port, settings.data_dir) == ("0.0.0.0", 8001, Path("./data"))
    assert (settings.max_retries, settings.request_timeout, settings.proxy_url) == (3, 60.0, None)
    assert settings.k2think_base_url == "https://www.k2think.ai"
    assert settings.k2think_upstream_model == "MBZUAI-IFM/K2-Think-v2"
    assert settings.output_thinking is True and settings.thinking_format == "reasoning_content"
    assert settings.client_keys == [] and settings.k2think_token is None and settings.tokens_file is None


def test_every_k2think_path_derives_from_the_base_url() -> None:
    settings = _settings(k2think_base_url="http://upstream.test:8080/")
    assert settings.k2think_chat_url == "http://upstream.test:8080/api/chat/completions"
    assert settings.k2think_guest_url == "http://upstream.test:8080/api/guest/chat/completions"
    assert settings.k2think_signin_url == "http://upstream.test:8080/api/v1/auths/signin"


def test_k2think_api_url_overrides_the_chat_endpoint_only() -> None:
    settings = _settings(k2think_base_url="http://base.test", k2think_api_url="http://other.test/chat")
    assert settings.k2think_chat_url == "http://other.test/chat"
    assert settings.k2think_guest_url == "http://base.test/api/guest/chat/completions"


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "HOST": "127.0.0.1", "PORT": "9000", "DATA_DIR": "/tmp/cb", "LOG_LEVEL": "DEBUG", "REQUEST_TIMEOUT": "5",
        "MAX_RETRIES": "1", "PROXY_URL": "http://proxy.test:3128", "K2THINK_UPSTREAM_MODEL": "m", "OUTPUT_THINKING": "false",
        "THINKING_FORMAT": "TAGS", "OPENAI_COMPAT_BASE_URL": "http://compat.test/v1", "OPENAI_COMPAT_MODELS": "a, b",
    }.items():
        monkeypatch.setenv(name, value)
    settings = _settings()
    assert (settings.host, settings.port, settings.data_dir, settings.log_level) == ("127.0.0.1", 9000, Path("/tmp/cb"), "DEBUG")
    assert (settings.request_timeout, settings.max_retries, settings.proxy_url) == (5.0, 1, "http://proxy.test:3128")
    assert (settings.k2think_upstream_model, settings.output_thinking, settings.thinking_format) == ("m", False, "tags")
    assert settings.openai_compat_model_ids == ["a", "b"]


def test_an_unknown_thinking_format_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(thinking_format="inline")
    assert "thinking_format" in str(caught.value)


def test_a_dotenv_with_a_byte_order_mark_keeps_its_first_variable(tmp_path: Path) -> None:
    """Windows editors save `.env` with a BOM; its first line must not become a variable named '\\ufeffPORT'."""
    env_file = tmp_path / ".env"
    env_file.write_bytes("PORT=9002\nLOG_LEVEL=debug\n".encode("utf-8-sig"))
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert (settings.port, settings.log_level) == (9002, "DEBUG")


EMPTY_MEANS_DEFAULT = {"PORT": 8001, "HOST": "0.0.0.0", "DATA_DIR": Path("./data"), "METRICS_PUBLIC": False,
                       "LOG_LEVEL": "INFO", "THINKING_FORMAT": "reasoning_content", "REDIS_KEY_PREFIX": "chatbridge:",
                       "REQUEST_TIMEOUT": 60.0, "KIMI_BASE_URL": "https://www.kimi.com", "KIMI_ENABLED": True}


@pytest.mark.parametrize("where", ["environment", ".env"])
def test_an_empty_variable_means_its_default(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`PORT=` (compose's `${PORT}` unset, an empty ConfigMap value) is the default, as it is for optional settings."""
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{name}=\n" for name in EMPTY_MEANS_DEFAULT) if where == ".env" else "")
    if where == "environment":
        for name in EMPTY_MEANS_DEFAULT:
            monkeypatch.setenv(name, "")
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert {name: getattr(settings, name.lower()) for name in EMPTY_MEANS_DEFAULT} == EMPTY_MEANS_DEFAULT


def test_an_empty_valid_api_key_lets_its_alias_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALID_API_KEY", "")
    monkeypatch.setenv("API_KEY", "alias-key-0123456789")
    assert _settings().client_keys == ["alias-key-0123456789"]


def test_log_format_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    assert _settings().log_format == "json"


def test_a_negative_kiro_catalog_interval_is_refused() -> None:
    """`KIRO_MODELS_REFRESH=-5` would re-read the catalog in a busy loop; 0 (read once) is allowed."""
    from pydantic import ValidationError

    from chatbridge.config import Settings

    assert Settings(_env_file=None, kiro_models_refresh=0).section("kiro").kiro_models_refresh == 0  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(_env_file=None, kiro_models_refresh=-5)  # type: ignore[call-arg]
