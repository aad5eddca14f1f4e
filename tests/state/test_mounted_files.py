"""A file mounted on its own (Docker's single-file bind mount) cannot be renamed over: it is rewritten in place.

`os.replace` onto such a file fails with EBUSY (EXDEV or EPERM on some setups). The new content
is then journaled next to it and written into the same inode (owner and permissions kept), a
backup is still made, the switch is logged once, and a write in place killed half-way is
finished from the journal at the next start.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chatbridge.pool.sources import read_tokens_file
from chatbridge.pool.tokens_file import backup_path, cleanup_temp_files, replace_tokens_file
from chatbridge.state.files import pending_path, replace_file

REPO = Path(__file__).resolve().parents[2]


def refuse_rename_onto(monkeypatch: pytest.MonkeyPatch, target: Path, code: int = errno.EBUSY) -> None:
    real = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst) == target:
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".pending")))


@pytest.mark.parametrize("code", [errno.EBUSY, errno.EXDEV, errno.EPERM], ids=["EBUSY", "EXDEV", "EPERM"])
def test_a_file_that_cannot_be_renamed_over_is_rewritten_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, code: int,
) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("# mine\nold-token-1\nold-token-2\n")
    path.chmod(0o640)
    inode = path.stat().st_ino
    refuse_rename_onto(monkeypatch, path, code)
    with caplog.at_level(logging.WARNING, logger="chatbridge.state.files"):
        assert replace_tokens_file(path, ["new-token-1", "new-token-2"]) is True
        assert replace_tokens_file(path, ["new-token-3"]) is True
    assert read_tokens_file(path) == ["new-token-3"] and "# mine" in path.read_text()  # comments kept too
    assert read_tokens_file(backup_path(path)) == ["new-token-1", "new-token-2"]
    assert path.stat().st_ino == inode and path.stat().st_mode & 0o777 == 0o640  # same file, same permissions
    assert leftovers(tmp_path) == []
    said = [r.getMessage() for r in caplog.records if "rewritten in place" in r.getMessage()]
    assert len(said) == 1 and errno.errorcode[code] in said[0]


def test_other_rename_errors_still_fail_and_leave_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys"
    path.write_bytes(b"old")
    refuse_rename_onto(monkeypatch, path, errno.ENOSPC)
    with pytest.raises(OSError, match="No space"):
        replace_file(path, b"new")
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_a_file_that_cannot_be_opened_either_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    refuse_rename_onto(monkeypatch, path)
    real_open = os.open

    def deny(file: str | os.PathLike[str], flags: int, *args: int, **kwargs: int) -> int:
        if Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(PermissionError):
        replace_file(path, b"new")
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


_KILLED_IN_PLACE = textwrap.dedent("""
    import errno, os, sys, time
    from pathlib import Path
    path, marker = Path(sys.argv[1]), Path(sys.argv[2])
    real_replace, real_pwrite = os.replace, os.pwrite
    def replace(src, dst):
        if Path(dst) == path:
            raise OSError(errno.EBUSY, "Device or resource busy")
        real_replace(src, dst)
    def pwrite(fd, data, offset):  # half the new content lands, then the process is killed
        real_pwrite(fd, bytes(data[: len(data) // 2]), offset)
        marker.write_text("half written")
        time.sleep(60)
    os.replace, os.pwrite = replace, pwrite
    from chatbridge.pool.tokens_file import replace_tokens_file
    replace_tokens_file(path, [f"new-token-{i}" for i in range(50)])
""")


def test_a_write_in_place_killed_half_way_is_finished_at_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("".join(f"old-token-{i}\n" for i in range(50)))
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_IN_PLACE, str(path), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the child never began writing in place"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    torn = read_tokens_file(path)
    assert torn != [f"new-token-{i}" for i in range(50)] and pending_path(path).exists()  # really half-done

    cleanup_temp_files(path)  # what the next start does (the pool lifecycle, under the file's lock)
    assert read_tokens_file(path) == [f"new-token-{i}" for i in range(50)]
    assert leftovers(tmp_path) == []
