"""Private files replaced atomically, and the writer lock that tells a crash's leftovers from a save.

A file is replaced by writing a temporary file next to it (`.<name>.<random>.tmp`, mode 0600),
fsyncing it, renaming it over the original and fsyncing the folder: a reader, or the next start
after a crash, sees the old file or the new one, never half of one.

A killed writer leaves its temporary file behind. Age cannot tell such a leftover from the
file another worker is writing right now, ownership can: a writer of the state file holds an
exclusive `flock` on `.<name>.lock` while it writes, so whoever can take that lock knows every
leftover is stale. The kernel drops the lock when its holder dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("chatbridge.state.files")

TMP_SUFFIX = ".tmp"


def write_private_file(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data` atomically and durably (mode 0600); on error the old file stays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; some filesystems cannot fsync a folder, which is fine."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def writer_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold the exclusive lock of `path`'s writers; yields False if `blocking=False` and it is taken."""
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_locked(path: Path, data: bytes) -> None:
    """`write_private_file` under the writer lock, so a starting process never takes our temp file for a leftover."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(path):
        write_private_file(path, data)


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Remove every temporary file a killed writer of `path` left, unless a writer is saving right now."""
    if not path.parent.is_dir():
        return []
    removed: list[Path] = []
    try:
        with writer_lock(path, blocking=False) as held:
            if not held:
                log.debug("%s is being written by another process; its temporary files are kept", path.name)
                return []
            for leftover in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
                    removed.append(leftover)
                    log.info("removed %s, left by a write that was killed", leftover.name)
    except OSError as exc:  # a read-only folder: nothing of ours can be in it
        log.warning("could not check %s for leftover temporary files: %s", path.parent, exc)
    return removed
