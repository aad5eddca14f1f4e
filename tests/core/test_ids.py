"""Request and completion ids: the right shape, every character equally likely, no repeats."""

from __future__ import annotations

import re
import string
from collections import Counter

from chatbridge.api.openai.encode import completion_id
from chatbridge.core.ids import random_chars, request_id


def test_completion_ids_look_like_openai_ids_and_do_not_repeat() -> None:
    ids = {completion_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert all(re.fullmatch(r"chatcmpl-[A-Za-z0-9]{29}", i) for i in ids)


def test_request_ids_are_unique_hex() -> None:
    ids = {request_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in ids)


def test_random_chars_use_the_whole_alphabet_evenly() -> None:
    counts = Counter(random_chars(100_000))
    assert set(counts) == set(string.ascii_letters + string.digits)
    expected = 100_000 / 62
    assert all(abs(n - expected) < expected * 0.15 for n in counts.values())  # ~10 sigma; bias would be 25%+
