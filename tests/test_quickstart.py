"""README's Quickstart is exactly two commands, and `.ci/run` runs the second and fails with it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [block.strip() for block in blocks]


def test_readme_quickstart_is_two_commands_and_ci_runs_the_second() -> None:
    install_and_serve, install_and_test = _quickstart_commands()
    # a virtual environment first: Debian's and Ubuntu's system Python refuse `pip install`
    assert install_and_serve == "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && chatbridge serve"
    assert "\n" not in install_and_test and "pytest" in install_and_test and ".[test]" in install_and_test
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_and_test in ci.replace("pip install -q ", "pip install "), ".ci/run must run README's test command"


def _fake_tools(tmp_path: Path, pytest_status: int) -> dict[str, str]:
    """`pip` and `python` stand-ins on PATH, so `.ci/run` can be run without running the suite."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "python").write_text(f"#!/bin/sh\necho \"python $*\" >> '{tmp_path / 'calls'}'\nexit {pytest_status}\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("pytest_status", [0, 1])
def test_ci_script_fails_exactly_when_the_tests_fail(tmp_path: Path, pytest_status: int) -> None:
    result = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=_fake_tools(tmp_path, pytest_status),
                            capture_output=True, text=True, timeout=30)
    assert (tmp_path / "calls").read_text().strip() == "python -m pytest -q"
    assert (result.returncode == 0) == (pytest_status == 0)
