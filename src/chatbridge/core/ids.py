"""Identifiers for requests and completions: unique, not secret.

They come from `random` (seeded from the OS at start and again in every forked worker), not
`secrets`: an id names a request, it protects nothing, and a getrandom system call per id
showed up in the benchmark's profile.
"""

from __future__ import annotations

import random
import string

_ALPHABET = (string.ascii_letters + string.digits).encode()
# Random bytes → alphabet characters in one C call: bytes 0-247 map onto the 62 characters
# four times over and bytes 248-255 are dropped, so every character stays equally likely.
_TABLE = bytes(_ALPHABET[i % len(_ALPHABET)] for i in range(256))
_DROP = bytes(range(4 * len(_ALPHABET), 256))


def random_chars(length: int) -> str:
    """`length` characters from [A-Za-z0-9]."""
    size = length + length // 8 + 12  # 1 byte in 32 is dropped: this is almost always enough
    while True:
        chars = random.getrandbits(8 * size).to_bytes(size, "little").translate(_TABLE, _DROP)
        if len(chars) >= length:
            return chars[:length].decode("ascii")


def request_id() -> str:
    return f"req_{random.getrandbits(96):024x}"
