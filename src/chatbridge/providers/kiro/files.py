"""Writing a user's token file back without ever leaving it half-written, and one writer at a time.

The IDE's file may be a bind mount (a Docker `-v ~/.aws/sso/cache/kiro-auth-token.json:...`):
renaming onto a mount point fails (EBUSY, or EXDEV across filesystems), so the file is then
rewritten in place, in one write, fsynced. Its permissions (and, when we may, its owner) are kept
either way: the shared `state.files.replace_file` does both.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from chatbridge.state.files import held_lock
from chatbridge.state.files import replace_file as shared_replace_file


def replace_file(path: Path, data: bytes) -> None:
    """Replace the user's token file with `data`, keeping its mode and owner (`state.files.replace_file`)."""
    shared_replace_file(path, data, keep_mode=True)


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
    """An exclusive cross-process lock, waited for without blocking the event loop (`state.files.held_lock`)."""
    async with held_lock(lock, timeout) as ok:
        if not ok:
            raise LockTimeout(f"{lock.name} stayed locked for {timeout:g} s")
        yield
