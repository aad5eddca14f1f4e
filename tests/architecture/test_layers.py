"""The layers contract (pyproject's `[tool.importlinter]`) holds, and it would catch a layer importing upward."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with `root/src` first on the path, so it analyses that copy of the package."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", code, "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120,
    )


def test_the_layers_contract_is_kept() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    ids = tmp_path / "src" / "chatbridge" / "core" / "ids.py"
    ids.write_text(ids.read_text() + "\nfrom chatbridge.gateway import pipeline  # noqa: E402,F401\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "chatbridge.core.ids -> chatbridge.gateway.pipeline" in result.stdout


@pytest.mark.parametrize("module", ["features", "pool"])
def test_features_and_pool_stay_independent(tmp_path: Path, module: str) -> None:
    other = "pool.pool" if module == "features" else "features.tools"
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "src" / "chatbridge" / module / "__init__.py"
    target.write_text(target.read_text() + f"\nimport chatbridge.{other}  # noqa: E402,F401\n")
    assert _lint_imports(tmp_path).returncode != 0
