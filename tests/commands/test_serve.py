"""`chatbridge serve` refuses bad configuration with a readable message, not a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import _clean_environ


def _serve(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatbridge", "serve"], env={**_clean_environ(), **env}, cwd=cwd,
        capture_output=True, text=True, timeout=30,
    )


def test_invalid_value_names_the_variable(tmp_path: Path) -> None:
    result = _serve({"PORT": "eighty", "DATA_DIR": str(tmp_path)}, tmp_path)
    assert result.returncode == 2
    assert "PORT" in result.stderr and "Traceback" not in result.stderr + result.stdout


def test_admin_key_equal_to_client_key_is_refused(tmp_path: Path) -> None:
    result = _serve({"VALID_API_KEY": "shared-key-1234567890", "ADMIN_API_KEY": "shared-key-1234567890", "DATA_DIR": str(tmp_path)}, tmp_path)
    assert result.returncode == 2
    assert "ADMIN_API_KEY" in result.stderr and "Traceback" not in result.stderr
    assert "shared-key-1234567890" not in result.stderr + result.stdout


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "chatbridge", "version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip()


@pytest.mark.parametrize(("env", "names"), [
    ({"LOG_LEVEL": "bogus"}, ["LOG_LEVEL"]),
    ({"PROXY_URL": "socks5://proxyuser:proxy-pass-0123456789@127.0.0.1:1080"}, ["PROXY_URL"]),
    ({"PROXY_URL": "proxy.example:3128"}, ["PROXY_URL"]),
    ({"HEADER_TIMEOUT": "0", "MAX_CONNECTIONS": "many"}, ["HEADER_TIMEOUT", "MAX_CONNECTIONS"]),
    # An upstream's address that every request to it would fail on (they started, then failed each request).
    ({"OPENAI_COMPAT_BASE_URL": "compat.example/v1"}, ["OPENAI_COMPAT_BASE_URL"]),
    ({"K2THINK_API_KEY": "sk-k2-0123456789", "K2THINK_API_BASE_URL": "notaurl"}, ["K2THINK_API_BASE_URL"]),
    ({"KIMI_BASE_URL": "ftp://www.kimi.com"}, ["KIMI_BASE_URL"]),
    ({"KIRO_REGION": "us-east-1!", "KIRO_API_BASE": "https://"}, ["KIRO_REGION", "KIRO_API_BASE"]),
])
def test_an_invalid_setting_is_one_line_per_variable_and_exit_2(env: dict[str, str], names: list[str], tmp_path: Path) -> None:
    result = _serve({**env, "DATA_DIR": str(tmp_path)}, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(names), result.stderr
    assert all(line.startswith("chatbridge: invalid configuration: " + name + ":") for line, name in zip(lines, names, strict=True))
    assert "Traceback" not in result.stderr + result.stdout and "listening" not in result.stdout
    assert "proxy-pass-0123456789" not in result.stderr + result.stdout


def test_a_port_in_use_is_one_line_and_exit_2_and_never_says_listening(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve({"HOST": "127.0.0.1", "PORT": str(port), "DATA_DIR": str(tmp_path), "K2THINK_ENABLED": "false"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"chatbridge: cannot listen on 127.0.0.1:{port}: Address already in use (HOST/PORT, or --host/--port)"]
    assert "listening" not in result.stdout and "Traceback" not in result.stdout + result.stderr


def test_listening_is_printed_once_the_port_takes_connections(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**_clean_environ(), "HOST": "127.0.0.1", "PORT": str(port), "DATA_DIR": str(tmp_path), "K2THINK_ENABLED": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "chatbridge", "serve"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "listening on" in line:
                break
        else:
            raise AssertionError("never said it was listening")
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # the port is bound and listening the moment the line is out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_version_option() -> None:
    """`chatbridge --version`, the spelling every other CLI accepts."""
    result = subprocess.run([sys.executable, "-m", "chatbridge", "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() and "No such option" not in result.stderr


def test_a_data_dir_that_is_a_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    result = _serve({"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": str(tmp_path / "data"), "K2THINK_ENABLED": "false"}, tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("chatbridge:")]
    assert len(errors) == 1 and "Not a directory" in errors[0] and str(tmp_path / "data") in errors[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr and "listening" not in result.stdout


def test_an_ipv6_host_is_printed_in_brackets(tmp_path: Path) -> None:
    """`HOST=::1` → `http://[::1]:port`, a URL a client accepts, not `http://::1:port`."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    env = {**_clean_environ(), "HOST": "::1", "PORT": "0", "DATA_DIR": str(tmp_path), "K2THINK_ENABLED": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "chatbridge", "serve"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = next((line for line in proc.stdout if "listening on" in line or "cannot listen" in line), "")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if "cannot listen" in line:
        pytest.skip("no IPv6 loopback here")
    assert "listening on http://[::1]:" in line and "base URL: http://[::1]:" in line, line


def test_a_key_alias_set_to_another_key_is_warned_about(tmp_path: Path) -> None:
    """API_KEY beside a different VALID_API_KEY is not read; the clients holding it would get 401 with no hint why."""
    (tmp_path / ".env").write_text("API_KEY=alias-key-0123456789abcdef\n")
    with socket.socket() as taken:  # a port in use ends the start right after the warning
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = _serve({"VALID_API_KEY": "main-key-0123456789abcdef", "HOST": "127.0.0.1",
                         "PORT": str(taken.getsockname()[1]), "DATA_DIR": str(tmp_path)}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "chatbridge: warning: VALID_API_KEY is read; API_KEY also set, to a different value, is ignored\n"), result.stderr
    assert "alias-key-0123456789abcdef" not in result.stderr + result.stdout


def test_a_dotenv_not_in_utf8_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes("TOOLIFY_CUSTOM_PROMPT=café\n".encode("latin-1"))
    result = _serve({"DATA_DIR": str(tmp_path)}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "chatbridge: invalid configuration: .env is not UTF-8 text (byte 0xe9 at offset 25); save it as UTF-8"]
    assert "Traceback" not in result.stdout + result.stderr


def test_a_dotenv_line_that_is_not_name_value_is_one_warning(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT: 9000\nHOST=127.0.0.1\n")
    with socket.socket() as taken:  # a port in use ends the start right after the warning
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = _serve({"PORT": str(taken.getsockname()[1]), "DATA_DIR": str(tmp_path)}, tmp_path)
    assert result.returncode == 2, result.stderr
    warning = "chatbridge: warning: .env: line 1 (PORT ...) is not NAME=value and is ignored"
    assert result.stderr.splitlines().count(warning) == 1 and "python-dotenv" not in result.stderr, result.stderr
