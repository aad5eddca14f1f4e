"""Private files replaced atomically (or in place when they are mounted on their own), and the writer
lock that tells a crash's leftovers from a save.

A file is replaced by writing a temporary file next to it (`.<name>.<random>.tmp`, mode 0600),
fsyncing it, renaming it over the original and fsyncing the folder: a reader, or the next start
after a crash, sees the old file or the new one, never half of one.

A file mounted on its own (Docker's `-v ./tokens.txt:/app/tokens.txt`) cannot be renamed over:
the kernel answers EBUSY (or EXDEV, or EPERM). Then the new content, already complete and
durable in the temporary file, becomes the journal `.<name>.pending`, the file is rewritten in
place (same inode, so its owner and permissions stay) and fsynced, and the journal is removed.
A write in place killed half-way is finished from the journal at the next start, so a crash at
any moment still leaves the old content or the new one.

A killed writer leaves its temporary file behind. Age cannot tell such a leftover from the
file another worker is writing right now, ownership can: every writer holds an exclusive `flock`
on `.<name>.lock` while it writes, so whoever can take that lock knows every leftover is stale.
The kernel drops the lock when its holder dies, even by SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import glob
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

log = logging.getLogger("chatbridge.state.files")

TMP_SUFFIX = ".tmp"
PENDING_SUFFIX = ".pending"
# What rename says when the target is a mount point (a file bind-mounted on its own).
_NOT_RENAMEABLE = {errno.EBUSY: "EBUSY", errno.EXDEV: "EXDEV", errno.EPERM: "EPERM"}
_FOLDER_READ_ONLY = frozenset({errno.EACCES, errno.EROFS, errno.EPERM})
_said_in_place: set[Path] = set()  # files whose rewriting in place was already logged
_said_lock = threading.Lock()


def write_private_file(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data` atomically and durably (mode 0600); on error the old file stays."""
    replace_file(path, data.encode() if isinstance(data, str) else data)


def replace_file(
    path: Path, data: bytes, *, check: Callable[[Path], None] | None = None, keep_mode: bool = False,
) -> bool:
    """Replace `path` with `data`: by rename, or in place when `path` is a mount point; True when in place.

    `check(temporary)` runs once the new content is durable and before it takes the file's place
    (to verify it, back the old file up, or refuse because the file changed); whatever it raises
    leaves the old file as it was. A new file gets mode 0600; an existing one keeps its mode (and,
    where we may, its owner) with `keep_mode` (a user's own file, such as an IDE's token file),
    and one rewritten in place always keeps its own. A symlink is followed: the file it points to
    is replaced, the link stays. A folder we may not write in (a mounted file's read-only
    folder) leaves only the in-place way. Call it holding `writer_lock(path)` when other
    processes may write the same file.
    """
    path = path.resolve() if path.is_symlink() else path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        if exc.errno not in _FOLDER_READ_ONLY or not path.is_file() or check is not None:
            raise
        _overwrite(path, data)  # no temporary file and no journal are possible: one durable rewrite
        _say_once(path, errno.errorcode.get(exc.errno or 0, "read-only folder"))
        return True
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _set_mode(tmp, path if keep_mode else None)
        if check is not None:
            check(tmp)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno not in _NOT_RENAMEABLE or not path.is_file():
                raise
            _rewrite_in_place(path, tmp, data, _NOT_RENAMEABLE[exc.errno])
            return True
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return False


def _set_mode(tmp: Path, like: Path | None) -> None:
    """0600, or the mode (and owner, where we may) of the file `tmp` replaces."""
    try:
        info = like.stat() if like is not None else None
    except FileNotFoundError:
        info = None
    if info is None:
        os.chmod(tmp, 0o600)
        return
    os.chmod(tmp, stat.S_IMODE(info.st_mode))
    with contextlib.suppress(OSError):  # only root may give a file away: keep ours then
        os.chown(tmp, info.st_uid, info.st_gid)


def _overwrite(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def pending_path(path: Path) -> Path:
    """The journal of a write in place: the complete new content until the file holds it."""
    return path.with_name(f".{path.name}{PENDING_SUFFIX}")


def _rewrite_in_place(path: Path, tmp: Path, data: bytes, reason: str) -> None:
    target = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # first: a file we cannot open is left alone
    try:
        os.replace(tmp, pending_path(path))  # a rename inside the folder, which works
        _fsync_dir(path.parent)
        _write_all(target, data)
    finally:
        os.close(target)
    pending_path(path).unlink()
    _fsync_dir(path.parent)
    _say_once(path, reason)


def _write_all(fd: int, data: bytes) -> None:
    """`data` over the file's content from its start, cut to its length, durable."""
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)
    os.ftruncate(fd, len(data))
    os.fsync(fd)


def _say_once(path: Path, reason: str) -> None:
    with _said_lock:
        if path in _said_in_place:
            return
        _said_in_place.add(path)
    log.warning("%s cannot be replaced by a rename (%s: it is mounted on its own, as a Docker bind mount of "
                "one file is); it is rewritten in place instead, journaled in %s", path, reason, pending_path(path).name)


def finish_write_in_place(path: Path) -> bool:
    """Complete a write in place that was killed half-way, from its journal; True if there was one.

    Call it holding `writer_lock(path)` (`remove_stale_temp_files` does).
    """
    pending = pending_path(path)
    try:
        data = pending.read_bytes()
    except FileNotFoundError:
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
    pending.unlink()
    _fsync_dir(path.parent)
    log.warning("%s: finished a write in place that was interrupted (from %s)", path, pending.name)
    return True


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
    with locked(lock_path(path), None if blocking else 0.0) as held:
        yield held


# -- cross-process locks: one implementation, for sync code and for async code that holds it across awaits --


@contextlib.contextmanager
def locked(lock: Path, wait: float | None = None) -> Iterator[bool]:
    """An exclusive `flock` on the file `lock`; yields False if another process held it for `wait` s.

    `wait=None` waits as long as it takes (a blocking flock); the lock goes with the process, so a
    holder killed -9 never leaves it taken.
    """
    fd = acquire_lock(lock, wait)
    try:
        yield fd is not None
    finally:
        release_lock(fd)


@contextlib.asynccontextmanager
async def held_lock(lock: Path, wait: float) -> AsyncIterator[bool]:
    """`locked` for async code that holds it across awaits (a refresh's network call).

    The waiting runs in a thread, never on the event loop; a caller cancelled meanwhile leaves no
    lock behind (the thread may still get it: it is let go then).
    """
    acquiring = asyncio.ensure_future(asyncio.to_thread(acquire_lock, lock, wait))
    try:
        fd = await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        acquiring.add_done_callback(_release_when_acquired)
        raise
    try:
        yield fd is not None
    finally:
        release_lock(fd)


def acquire_lock(lock: Path, wait: float | None) -> int | None:
    """The locked file's descriptor, or None when another process held it for `wait` seconds."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if wait is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(0.05)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def release_lock(fd: int | None) -> None:
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _release_when_acquired(acquiring: asyncio.Future[int | None]) -> None:
    if not acquiring.cancelled() and acquiring.exception() is None:
        release_lock(acquiring.result())


def write_locked(path: Path, data: bytes) -> None:
    """`replace_file` under the writer lock, so a starting process never takes our temp file for a leftover."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(path):
        replace_file(path, data)


def remove_stale_temp_files(path: Path, also: Sequence[str] = ()) -> list[Path]:
    """Finish a killed write in place and remove every temporary file a killed writer of `path` left
    (`also`: more glob patterns, e.g. an older tool's), unless a writer is saving right now."""
    if not path.parent.is_dir():
        return []
    removed: list[Path] = []
    try:
        with writer_lock(path, blocking=False) as held:
            if not held:
                log.debug("%s is being written by another process; its temporary files are kept", path.name)
                return []
            finish_write_in_place(path)
            for pattern in (f".{glob.escape(path.name)}.*{TMP_SUFFIX}", *also):
                for leftover in path.parent.glob(pattern):
                    with contextlib.suppress(FileNotFoundError):
                        leftover.unlink()
                        removed.append(leftover)
                        log.info("removed %s, left by a write that was killed", leftover.name)
    except OSError as exc:  # a read-only folder: nothing of ours can be in it
        log.warning("could not check %s for leftover temporary files: %s", path.parent, exc)
    return removed
