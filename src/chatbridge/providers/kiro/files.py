"""Writing a user's token file back without ever leaving it half-written, and one writer at a time.

The IDE's file may be a bind mount (a Docker `-v ~/.aws/sso/cache/kiro-auth-token.json:...`):
renaming onto a mount point fails (EBUSY, or EXDEV across filesystems), so the file is then
rewritten in place, in one write, fsynced. Its permissions (and, when we may, its owner) are kept
either way. `replace_file` is the one function to swap for a shared helper once there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

TMP_SUFFIX = ".tmp"
_IN_PLACE_ERRORS = frozenset({errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES, errno.EROFS})


def replace_file(path: Path, data: bytes) -> None:
    """Replace `path`'s content with `data`: atomically where rename works, in place where it cannot.

    A symlink is followed (the file it points to is rewritten), as mounted secrets often are links.
    Raises OSError when neither way works; the old content is then untouched.
    """
    target = path.resolve() if path.is_symlink() else path
    try:
        info: os.stat_result | None = target.stat()
    except FileNotFoundError:
        info = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    except OSError as exc:
        if info is None or exc.errno not in _IN_PLACE_ERRORS:
            raise
        _rewrite_in_place(target, data)  # a folder we may not write in: only the file itself is ours
        return
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _copy_ownership(tmp, info)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if info is None or exc.errno not in _IN_PLACE_ERRORS:
            raise
        _rewrite_in_place(target, data)
        return
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """The same inode, rewritten: one write of the whole content, then truncate and fsync."""
    with open(path, "r+b") as handle:
        handle.write(data)
        handle.truncate()
        handle.flush()
        os.fsync(handle.fileno())


def _copy_ownership(tmp: Path, info: os.stat_result | None) -> None:
    """The new file gets the old one's mode (0600 for a new file) and, when permitted, its owner."""
    os.chmod(tmp, stat.S_IMODE(info.st_mode) if info is not None else 0o600)
    if info is not None and hasattr(os, "chown"):
        with contextlib.suppress(OSError):
            os.chown(tmp, info.st_uid, info.st_gid)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def lock_path(path: Path, fallback_dir: Path) -> Path:
    """`.<name>.lock` beside the file (the pool's leftover cleanup takes the same lock), else in `fallback_dir`."""
    if os.access(path.parent, os.W_OK):
        return path.with_name(f".{path.name}.lock")
    digest = hashlib.sha256(str(path.absolute()).encode()).hexdigest()[:16]
    return fallback_dir / f".kiro-{digest}.lock"


class LockTimeout(TimeoutError):
    """Another process held a token file's lock for longer than we may wait."""


@contextlib.asynccontextmanager
async def held(lock: Path, timeout: float) -> AsyncIterator[None]:
    """An exclusive cross-process lock, waited for without blocking the event loop."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"{lock.name} stayed locked for {timeout:g} s") from None
                await asyncio.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
