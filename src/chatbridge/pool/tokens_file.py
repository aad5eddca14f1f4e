"""The tokens file: atomic replacement with a backup, temp-file cleanup and change detection.

Replacement never leaves a moment without a complete file: the new content goes to a
temporary file in the same folder, is flushed and fsynced, checked to hold at least one
token, the current file is copied to `<name>.backup` (fsynced too), and the temporary file
is renamed over the original. Any failure before the rename leaves the original untouched.

Writers that merge with what is on disk pass the `FileSignature` they read; if the file was
edited in the meantime the replacement is refused (`TokensFileChanged`) so that the writer
can merge again instead of overwriting a hand edit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatbridge.pool.sources import parse_tokens_text
from chatbridge.state.files import write_private_file

_TMP_SUFFIX = ".tmp"


class _Unset:
    """No expectation about the file on disk (plain replacement)."""


_UNSET = _Unset()


class TokensFileError(Exception):
    """The tokens file could not be written; the previous file is still in place."""


class TokensFileChanged(TokensFileError):
    """The file changed on disk after the writer read it; nothing was written."""


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".backup")


def render_tokens(tokens: Sequence[str], note: str = "") -> str:
    header = f"# written by chatbridge at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {len(tokens)} token(s)"
    lines = [header + (f", {note}" if note else ""), *tokens]
    return "\n".join(lines) + "\n"


def replace_tokens_file(
    path: Path, tokens: Sequence[str], note: str = "", *, expected: FileSignature | _Unset | None = _UNSET,
) -> None:
    """Atomically replace `path` with `tokens`; raises `TokensFileError`, old file intact.

    With `expected` (the signature read before merging, None for "did not exist"), a file
    edited since then is left alone and `TokensFileChanged` is raised.
    """
    if not tokens:
        raise TokensFileError("refusing to write an empty tokens file")
    text = render_tokens(tokens, note)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        written = parse_tokens_text(tmp.read_text(encoding="utf-8"))
        if len(written) != len(set(tokens)):
            raise TokensFileError(f"temporary file holds {len(written)} token(s), expected {len(set(tokens))}")
        os.chmod(tmp, 0o600)
        if not isinstance(expected, _Unset) and signature(path) != expected:
            raise TokensFileChanged(f"{path.name} was edited while the new tokens were prepared")
        if path.exists():
            _copy_atomically(path, backup_path(path))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except TokensFileError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TokensFileError(f"could not write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_atomically(source: Path, target: Path) -> None:
    """The backup is a complete, durable copy before the original is replaced."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    try:
        shutil.copy2(source, tmp_name)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def cleanup_temp_files(path: Path) -> list[Path]:
    """Remove temporary files a crashed replacement left next to `path`; returns them."""
    folder = path.parent
    if not folder.is_dir():
        return []
    removed: list[Path] = []
    patterns = (f".{path.name}.*{_TMP_SUFFIX}", f".{backup_path(path).name}.*{_TMP_SUFFIX}", f"{path.name}.tmp")
    for pattern in patterns:
        for leftover in folder.glob(pattern):
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed.append(leftover)
    return removed


@dataclass(frozen=True, slots=True)
class FileSignature:
    mtime_ns: int
    size: int
    inode: int


def signature(path: Path) -> FileSignature | None:
    """What changes when the file is edited or replaced; None when it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return FileSignature(st.st_mtime_ns, st.st_size, st.st_ino)


def has_tokens(path: Path) -> bool:
    try:
        return bool(parse_tokens_text(path.read_text(encoding="utf-8")))
    except OSError:
        return False


@contextlib.contextmanager
def exclusive_lock(path: Path, wait: float = 0.0) -> Iterator[bool]:
    """A cross-process lock next to `path`; yields False if someone else holds it for `wait` seconds.

    Every writer of the tokens file takes it (the gateway's refresh in each worker,
    `chatbridge accounts login`, leftover cleanup), so they never interleave.
    """
    lock_path = path.with_name(f".{path.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.1)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def replace_token_line(path: Path, old: str, new: str) -> None:
    """Put `new` where the line holding `old` is, every other line (comments, order) kept as it was.

    Atomic and durable (a temporary file, fsynced, renamed over the original, the folder
    fsynced): a crash leaves the old file or the new one. Hold `exclusive_lock(path)` (or
    `held_lock`) meanwhile; raises `TokensFileChanged` if `old` is no longer in the file.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.strip() == old:
            lines[index] = line.replace(old, new, 1)
            break
    else:
        raise TokensFileChanged(f"{path.name} no longer holds the token that was renewed")
    write_private_file(path, "".join(lines))


@contextlib.asynccontextmanager
async def held_lock(path: Path, wait: float) -> AsyncIterator[bool]:
    """`exclusive_lock` for async code that holds it across awaits (a refresh's network call).

    Yields False if another writer held it for `wait` seconds. The waiting runs in a thread; a
    caller cancelled meanwhile leaves no lock behind.
    """
    acquiring = asyncio.ensure_future(asyncio.to_thread(_acquire, path, wait))
    try:
        fd = await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        acquiring.add_done_callback(_release_when_acquired)  # the thread may still get it: let it go then
        raise
    try:
        yield fd is not None
    finally:
        _release(fd)


def _acquire(path: Path, wait: float) -> int | None:
    lock_path = path.with_name(f".{path.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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


def _release_when_acquired(acquiring: asyncio.Future[int | None]) -> None:
    if not acquiring.cancelled() and acquiring.exception() is None:
        _release(acquiring.result())


def _release(fd: int | None) -> None:
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
