"""`chatbridge check-config` reads CLIENT_KEYS_FILE as the gateway does: its keys by name, or the entry at fault."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner


def _cli() -> typer.Typer:
    from chatbridge import commands as module

    return module.app


def test_check_config_names_the_file_keys_or_the_broken_entry(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - key: sk-check-config-0123456789\n    name: team-a\n    requests_per_minute: 5\n")
    env = {"CLIENT_KEYS_FILE": str(keys), "DATA_DIR": str(tmp_path / "d"), "KIMI_ENABLED": "false"}
    result = CliRunner().invoke(_cli(), ["check-config"], env=env)
    assert result.exit_code == 0, result.output
    assert "1 named client key(s): team-a" in result.output and "the keys are CLIENT_KEYS_FILE's" in result.output
    keys.write_text("keys:\n  - key: sk-check-config-0123456789\n    name: team-a\n    requests_per_minute: soon\n")
    result = CliRunner().invoke(_cli(), ["check-config"], env=env)
    assert result.exit_code == 1
    assert "keys[0] (name 'team-a'): requests_per_minute" in result.output
    assert "sk-check-config-0123456789" not in result.output
