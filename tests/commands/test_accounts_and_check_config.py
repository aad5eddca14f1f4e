"""`chatbridge check-config` and `chatbridge accounts login`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from chatbridge.config import Settings, env_names
from tests.harness import _clean_environ
from tests.pool.helpers import assert_no_full_token, write_accounts
from tests.upstreams import K2ThinkEmulator


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    from chatbridge import commands as module

    return module.app


def run(cli: typer.Typer, *args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


def test_example_env_is_complete_and_valid(cli: typer.Typer, tmp_path: Path) -> None:
    code, output = run(cli, "check-config", "--example")
    assert code == 0
    names = {line.split("=", 1)[0].lstrip("# ").strip() for line in output.splitlines() if "=" in line and not line.startswith("# ---")}
    names = {n for n in names if n.isupper() and " " not in n}
    fields = env_names() | {"VALID_API_KEY"}
    assert names <= fields, names - fields
    assert fields - {"VALID_API_KEY"} - names <= {"K2THINK_API_URL", "TOOLIFY_CUSTOM_PROMPT", "K2THINK_TOKEN"} | {"TOKENS_FILE", "ACCOUNTS_FILE"}
    env_file = tmp_path / "example.env"
    env_file.write_text(output)
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.accounts_file is None and settings.tokens_file is None and settings.port == 8001


def test_check_config_reports_counts_and_expired_tokens(cli: typer.Typer, tmp_path: Path, k2emu: K2ThinkEmulator) -> None:
    good, expired = k2emu.mint_token(), k2emu.mint_token(exp_in=-10)
    (tmp_path / "tokens.txt").write_text(f"{good}\n{expired}\n")
    accounts = write_accounts(tmp_path / "accounts.txt", [("alice@example.com", "pw-alice-secret")])
    with accounts.open("a") as handle:
        handle.write("this is not json\n")
    accounts.chmod(0o600)
    (tmp_path / ".env").write_text(f"TOKENS_FILE={tmp_path / 'tokens.txt'}\nACCOUNTS_FILE={accounts}\n"
                                   f"ENABLE_TOKEN_AUTO_UPDATE=true\nDATA_DIR={tmp_path / 'data'}\n")
    code, output = run(cli, "check-config")
    assert code == 0, output
    assert "2 token(s), 1 not expired" in output and "1 token(s) have an expired JWT" in output
    assert "1 account(s)" in output and "line 2: not a JSON object" in output
    assert "0 error(s)" in output
    assert_no_full_token(output, [good, expired, "pw-alice-secret"])


def test_check_config_explains_errors_and_fails(cli: typer.Typer, tmp_path: Path) -> None:
    code, output = run(cli, "check-config", TOKENS_FILE=str(tmp_path / "missing.txt"), ENABLE_TOKEN_AUTO_UPDATE="true",
                       VALID_API_KEY="same-key-0123456789", ADMIN_API_KEY="same-key-0123456789", DATA_DIR=str(tmp_path / "d"))
    assert code == 1
    assert "missing.txt does not exist" in output and "chatbridge accounts login" in output
    assert "ENABLE_TOKEN_AUTO_UPDATE: is true but no ACCOUNTS_FILE" in output
    assert "is also a client key" in output and "same-key-0123456789" not in output
    code, output = run(cli, "check-config", PORT="not-a-port")
    assert code == 2 and "PORT" in output  # an invalid setting: exit 2, as `serve` does


def test_accounts_login_writes_a_tokens_file(tmp_path: Path, k2emu: K2ThinkEmulator) -> None:
    k2emu.add_account("alice@example.com", "pw-alice-secret")
    k2emu.add_account("bob@example.com", "pw-bob-secret")
    k2emu.fail_signin("bob@example.com", status=500, times=1)
    k2emu.signin_token_in = "cookie"
    accounts = write_accounts(tmp_path / "accounts.txt", [
        ("alice@example.com", "pw-alice-secret"), ("bob@example.com", "pw-bob-secret"), ("eve@example.com", "pw-eve-secret"),
    ])
    out = tmp_path / "out" / "tokens.txt"
    env = {**_clean_environ(), "SIGNIN_RETRY_BACKOFF": "0.01", "COLUMNS": "200"}

    def login() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chatbridge", "accounts", "login", "--accounts", str(accounts), "--out", str(out),
             "--base-url", k2emu.base_url, "--concurrency", "2"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )

    first = login()
    assert first.returncode == 3, first.stderr  # written, but one account failed
    output = first.stdout + first.stderr
    issued = [t for tokens in k2emu.issued_tokens.values() for t in tokens]
    assert sorted(line for line in out.read_text().splitlines() if not line.startswith("#")) == sorted(issued)
    assert "al***@example.com" in output and "ev***@example.com" in output and "refused" in output
    assert "2 signed in, 1 failed" in output
    assert re.search(r"signing in .*━+.* 3/3 .*1 failed", output), output  # the progress bar, at its end
    assert "eve@example.com" not in output and "alice@example.com" not in output
    assert_no_full_token(output, [*issued, "pw-alice-secret", "pw-bob-secret", "pw-eve-secret"])
    assert os.stat(out).st_mode & 0o777 == 0o600

    k2emu.fail_signin("alice@example.com", status=400, body={"detail": "nope"})
    k2emu.fail_signin("bob@example.com", status=400, body={"detail": "nope"})
    before = out.read_text()
    second = login()
    assert second.returncode == 1 and "was not touched" in second.stdout + second.stderr
    assert out.read_text() == before and not (out.parent / "tokens.txt.backup").exists()


def test_accounts_login_waits_for_a_writer_holding_the_tokens_file(
    cli: typer.Typer, tmp_path: Path, k2emu: K2ThinkEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatbridge.commands import accounts as pool_cli
    from chatbridge.pool.tokens_file import exclusive_lock

    k2emu.add_account("alice@example.com", "pw-alice-secret")
    accounts = write_accounts(tmp_path / "accounts.txt", [("alice@example.com", "pw-alice-secret"), ("x@example.com", "pw-x")])
    out = tmp_path / "tokens.txt"
    out.write_text("# the gateway is refreshing this file\nkept-token\n")
    monkeypatch.setattr(pool_cli, "LOCK_WAIT", 0.3)
    args = ["accounts", "login", "--accounts", str(accounts), "--out", str(out), "--base-url", k2emu.base_url]
    with exclusive_lock(out):
        code, output = run(cli, *args, COLUMNS="200")
    assert code == 1 and "Another process" in output and "was not touched" in output
    assert out.read_text() == "# the gateway is refreshing this file\nkept-token\n"

    code, output = run(cli, *args, COLUMNS="200")
    assert code == 3, output  # written, but x@example.com was refused
    rows = [line for line in output.splitlines() if "@example.com" in line]
    assert any(re.search(r"\b1\b.*al\*\*\*@example\.com.*signed in", row) for row in rows), output
    assert any(re.search(r"\b2\b.*x\*\*\*@example\.com.*refused", row) for row in rows), output  # the line tells them apart
    assert "kept-token" in (tmp_path / "tokens.txt.backup").read_text()


def test_check_config_fails_on_unreadable_files_and_explains_accounts_without_auto_update(cli: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "tokens.bin").write_bytes(b"token\n\xff\xfe\x00\n")
    code, output = run(cli, "check-config", TOKENS_FILE=str(tmp_path / "tokens.bin"), DATA_DIR=str(tmp_path / "d"))
    assert code == 1 and "tokens.bin cannot be read" in output and "UTF-8" in output
    code, output = run(cli, "check-config", TOKENS_FILE=str(tmp_path), DATA_DIR=str(tmp_path / "d"))
    assert code == 1 and "cannot be read" in output
    accounts = write_accounts(tmp_path / "accounts.txt", [("alice@example.com", "pw-alice-secret")])
    accounts.chmod(0o600)
    code, output = run(cli, "check-config", ACCOUNTS_FILE=str(accounts), DATA_DIR=str(tmp_path / "d"))
    assert code == 0, output
    assert "only used by `chatbridge accounts login` while ENABLE_TOKEN_AUTO_UPDATE is false" in output
    assert "guest mode" in output and "ACCOUNTS_FILE with ENABLE_TOKEN_AUTO_UPDATE=true" in output
    code, output = run(cli, "check-config", ACCOUNTS_FILE=str(tmp_path / "nope.txt"), ENABLE_TOKEN_AUTO_UPDATE="true",
                       DATA_DIR=str(tmp_path / "d"))
    assert code == 1 and "nope.txt does not exist" in output


def test_check_config_reports_kimi_tokens_and_mode(cli: typer.Typer, tmp_path: Path) -> None:
    from tests.upstreams.kimi import KimiEmulator

    emulator = KimiEmulator()
    refresh, access = emulator.mint_refresh_token("u1"), emulator.mint_access_token("u1")
    tokens = tmp_path / "kimi-tokens.txt"
    tokens.write_text(f"{refresh}\n{access}\n")
    tokens.chmod(0o600)
    code, output = run(cli, "check-config", KIMI_TOKENS_FILE=str(tokens), DATA_DIR=str(tmp_path / "d"))
    assert code == 0, output  # an access token is used until its exp: a warning, not an error
    assert "1 refresh token(s)" in output and "1 access token(s) (typ: access)" in output and "account mode" in output
    assert "cannot be renewed" in output
    assert_no_full_token(output, [refresh, access])
    code, output = run(cli, "check-config", DATA_DIR=str(tmp_path / "d"))
    assert "Kimi: guest mode" in output
    code, output = run(cli, "check-config", KIMI_TOKENS_FILE=str(tmp_path / "none.txt"), DATA_DIR=str(tmp_path / "d"))
    assert code == 1 and "none.txt does not exist" in output
    code, output = run(cli, "check-config", KIMI_BASE_URL="www.kimi.com", DATA_DIR=str(tmp_path / "d"))
    assert code == 2 and "KIMI_BASE_URL: must be an http:// or https:// URL" in output  # an invalid setting, as serve says


def test_check_config_warns_about_mistyped_names(cli: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ENABLE_TOKEN_AUTOUPDATE=true\nAPI_KEY=alias-key-0123456789abcdef\nFOO_BAR=1\n")
    code, output = run(cli, "check-config", VALID_APIKEY="sk-typo-0123456789abcdef", LOGLEVEL="debug",
                       DATA_DIR=str(tmp_path / "d"), EDITOR="vim")
    assert code == 0, output
    assert re.search(r"warning VALID_APIKEY: in the environment .*did you mean VALID_API_KEY\?", output), output
    assert re.search(r"warning LOGLEVEL: in the environment .*did you mean LOG_LEVEL\?", output), output
    assert re.search(r"warning ENABLE_TOKEN_AUTOUPDATE: in .*\.env .*did you mean ENABLE_TOKEN_AUTO_UPDATE\?", output), output
    assert re.search(r"warning FOO_BAR: in .*\.env is not a chatbridge variable", output), output
    assert "warning API_KEY" not in output  # an accepted alias is not unknown
    assert "EDITOR" not in output  # other programs' variables are left alone
    assert "sk-typo-0123456789abcdef" not in output
    assert "0 error(s), 4 warning(s)" in output


@pytest.mark.parametrize(("env", "name"), [
    ({"LOG_LEVEL": "bogus"}, "LOG_LEVEL"),
    ({"PROXY_URL": "socks5://u:proxy-pass-0123456789@127.0.0.1:1080"}, "PROXY_URL"),
    ({"MAX_HEADER_BYTES": "tiny"}, "MAX_HEADER_BYTES"),
    ({"PSEUDO_STREAM_INTERVAL_MS": "inf"}, "PSEUDO_STREAM_INTERVAL_MS"),  # would stall every paced stream
    ({"KIRO_MODELS_REFRESH": "nan"}, "KIRO_MODELS_REFRESH"),  # passes no bound
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),  # traces would be lost
    ({"K2THINK_BASE_URL": "www.k2think.ai"}, "K2THINK_BASE_URL"),  # every request to K2Think would fail
    ({"KIRO_REGION": "Frankfurt"}, "KIRO_REGION"),  # it becomes part of every Kiro host
])
def test_check_config_refuses_invalid_settings_in_one_line_with_exit_2(
    cli: typer.Typer, tmp_path: Path, env: dict[str, str], name: str,
) -> None:
    code, output = run(cli, "check-config", DATA_DIR=str(tmp_path / "d"), **env)
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("✗ error") and f"{name}:" in lines[0], output
    assert "Traceback" not in output and "proxy-pass-0123456789" not in output


def test_accounts_login_exits_0_only_when_every_account_signed_in(tmp_path: Path, k2emu: K2ThinkEmulator) -> None:
    k2emu.add_account("alice@example.com", "pw-alice-secret")
    k2emu.add_account("bob@example.com", "pw-bob-secret")
    accounts = write_accounts(tmp_path / "accounts.txt", [("alice@example.com", "pw-alice-secret"),
                                                          ("bob@example.com", "pw-bob-secret")])
    out = tmp_path / "tokens.txt"
    result = subprocess.run(
        [sys.executable, "-m", "chatbridge", "accounts", "login", "--accounts", str(accounts), "--out", str(out),
         "--base-url", k2emu.base_url],
        cwd=tmp_path, env={**_clean_environ(), "COLUMNS": "200"}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 signed in, 0 failed" in result.stdout + result.stderr


def test_check_config_leaves_the_opentelemetry_variables_alone(cli: typer.Typer, tmp_path: Path) -> None:
    """OTEL_* are the SDK's (read from the environment): no "did you mean OTEL_EXPORTER_OTLP_ENDPOINT?"; in .env
    they would be silently unread, which is said."""
    (tmp_path / ".env").write_text("OTEL_SERVICE_NAME=gw-eu\n")
    code, output = run(cli, "check-config", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://127.0.0.1:4318/v1/traces",
                       OTEL_EXPORTER_OTLP_HEADERS="x-key=abc", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "m"),
                       DATA_DIR=str(tmp_path / "d"))
    assert code == 0, output
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" not in output and "OTEL_EXPORTER_OTLP_HEADERS" not in output
    assert "PROMETHEUS_MULTIPROC_DIR" not in output
    assert re.search(r"warning OTEL_SERVICE_NAME: in .*\.env is not read: the OpenTelemetry SDK", output), output


@pytest.mark.parametrize(("env", "dotenv", "read", "ignored"), [
    ({"VALID_API_KEY": "first-key-0123456789", "API_KEY": "second-key-0123456789"}, "", "VALID_API_KEY", "API_KEY"),
    ({"API_KEY": "env-key-0123456789"}, "API_MASTER_KEY=file-key-0123456789\n", "API_KEY", "API_MASTER_KEY"),
])
def test_check_config_warns_when_a_key_alias_is_set_to_another_value(
    cli: typer.Typer, tmp_path: Path, env: dict[str, str], dotenv: str, read: str, ignored: str,
) -> None:
    """Only one of VALID_API_KEY / API_MASTER_KEY / API_KEY is read; the other key would be refused, silently."""
    (tmp_path / ".env").write_text(dotenv)
    code, output = run(cli, "check-config", DATA_DIR=str(tmp_path / "d"), **env)
    assert code == 0, output
    assert re.search(rf"warning {read}: is read; {ignored} also set, to a different value, is ignored", output), output
    assert not any(value in output for value in [*env.values(), "file-key-0123456789"])


def test_check_config_says_nothing_when_the_aliases_agree(cli: typer.Typer, tmp_path: Path) -> None:
    code, output = run(cli, "check-config", DATA_DIR=str(tmp_path / "d"), VALID_API_KEY="same-key-0123456789",
                       API_KEY="same-key-0123456789")
    assert code == 0 and "0 warning(s)" in output, output


def test_check_config_reads_a_dotenv_with_a_byte_order_mark(cli: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(f"DATA_DIR={tmp_path / 'd'}\nLOG_LEVEL=debug\n".encode("utf-8-sig"))
    code, output = run(cli, "check-config")
    assert code == 0 and "0 warning(s)" in output and "not a chatbridge variable" not in output, output


def test_check_config_refuses_an_env_file_that_does_not_exist(cli: typer.Typer, tmp_path: Path) -> None:
    """An explicit --env-file that is missing (a typo) is not "using the environment only"."""
    code, output = run(cli, "check-config", "--env-file", str(tmp_path / "prod.env"), DATA_DIR=str(tmp_path / "d"))
    assert code == 2 and f"--env-file {tmp_path / 'prod.env'}: no such file" in output, output
    assert "using the environment only" not in output


def test_check_config_refuses_a_dotenv_not_in_utf8_in_one_line_with_exit_2(cli: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes("TOOLIFY_CUSTOM_PROMPT=café\n".encode("latin-1"))
    code, output = run(cli, "check-config", DATA_DIR=str(tmp_path / "d"))
    assert code == 2, output
    assert [line for line in output.splitlines() if line.strip()] == [
        "✗ error    .env is not UTF-8 text (byte 0xe9 at offset 25); save it as UTF-8"], output


def test_check_config_warns_once_about_each_line_that_is_not_name_value(cli: typer.Typer, tmp_path: Path) -> None:
    """`PORT: 9000` (YAML habits) is read as nothing; say which line, once, never its value."""
    (tmp_path / ".env").write_text("PORT: 9000\nLOG_LEVEL=debug\nVALID_API_KEY sk-secret-0123456789\n")
    code, output = run(cli, "check-config", DATA_DIR=str(tmp_path / "d"))
    assert code == 0, output
    assert re.search(r"warning .env: line 1 \(PORT \.\.\.\) is not NAME=value and is ignored", output), output
    assert re.search(r"warning .env: line 3 \(VALID_API_KEY \.\.\.\) is not NAME=value", output), output
    assert "0 error(s), 2 warning(s)" in output and "python-dotenv" not in output and "sk-secret" not in output
