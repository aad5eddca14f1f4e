"""Keys the gateway makes for itself: a client key and an admin key when none is configured.

There is no well-known default key. On first start a random key is generated, stored under
DATA_DIR with mode 0600 (written atomically), printed once, and reused from then on.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path


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
            return StoredKey(value, path, created=False)
    value = prefix + secrets.token_urlsafe(32)
    write_private_file(path, value + "\n")
    return StoredKey(value, path, created=True)


def write_private_file(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, fsync, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
