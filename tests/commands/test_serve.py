"""`chatbridge serve` refuses bad configuration with a readable message, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
