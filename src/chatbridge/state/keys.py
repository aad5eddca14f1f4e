"""Keys the gateway makes for itself: a client key and an admin key when none is configured.

There is no well-known default key. On first start a random key is generated, stored under
DATA_DIR with mode 0600 (written atomically, under the file's writer lock, so two processes
starting at once agree on one key), printed once, and reused from then on. A key write killed
half-way leaves only a temporary file, removed at the next start by lock ownership.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from chatbridge.core.secrets import register_secret
from chatbridge.state.files import remove_stale_temp_files, replace_file, writer_lock
from chatbridge.state.files import write_private_file as write_private_file  # moved; re-exported for old callers


@dataclass(frozen=True, slots=True)
class StoredKey:
    value: str
    path: Path
    created: bool  # True only on the start that generated it


def load_or_create_key(data_dir: Path, name: str, prefix: str) -> StoredKey:
    path = data_dir / name
    remove_stale_temp_files(path)
    stored = _read_key(path)
    if stored is None:
        with writer_lock(path):
            stored = _read_key(path)  # another process may have made it meanwhile
            if stored is None:
                value = prefix + secrets.token_urlsafe(32)
                replace_file(path, (value + "\n").encode())
                stored = StoredKey(value, path, created=True)
    register_secret(stored.value)
    return stored


def _read_key(path: Path) -> StoredKey | None:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return StoredKey(value, path, created=False) if value else None
