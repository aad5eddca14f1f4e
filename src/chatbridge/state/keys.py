"""Keys the gateway makes for itself: a client key and an admin key when none is configured.

There is no well-known default key. On first start a random key is generated, stored under
DATA_DIR with mode 0600 (written atomically), printed once, and reused from then on.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from chatbridge.core.secrets import register_secret
from chatbridge.state.files import write_private_file as write_private_file  # moved; re-exported for old callers


@dataclass(frozen=True, slots=True)
class StoredKey:
    value: str
    path: Path
    created: bool  # True only on the start that generated it


def load_or_create_key(data_dir: Path, name: str, prefix: str) -> StoredKey:
    path = data_dir / name
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        if value:
            register_secret(value)
            return StoredKey(value, path, created=False)
    value = prefix + secrets.token_urlsafe(32)
    register_secret(value)
    write_private_file(path, value + "\n")
    return StoredKey(value, path, created=True)
