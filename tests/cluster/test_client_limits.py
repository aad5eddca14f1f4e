"""A client key's requests_per_minute is one budget for the whole deployment, not one per replica."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from .conftest import COMPAT_MODEL, Cluster

LIMITED_KEY = "sk-team-limited-0123456789abcdef"
PER_MINUTE = 5
HI = [{"role": "user", "content": "hi"}]


def keys_file(folder: Path) -> Path:
    path = folder / "client-keys.yaml"
    path.write_text(f"""keys:
  - key: {LIMITED_KEY}
    name: team-limited
    requests_per_minute: {PER_MINUTE}
""")
    return path


def test_requests_per_minute_admits_exactly_n_across_all_replicas(start_cluster: Any, tmp_path: Path) -> None:
    cluster: Cluster = start_cluster(CLIENT_KEYS_FILE=str(keys_file(tmp_path)))
    oa = cluster.openai(api_key=LIMITED_KEY)
    an = cluster.anthropic(api_key=LIMITED_KEY)
    go = threading.Barrier(12)

    def one(n: int) -> tuple[int, str, Any]:
        """(status, dialect, the HTTP response) of one request; half in each dialect, all at once."""
        go.wait(10)
        try:
            if n % 2:
                raw = an.messages.with_raw_response.create(model=COMPAT_MODEL, max_tokens=16, messages=HI)
                raw.parse()
                return raw.status_code, "anthropic", raw
            raw = oa.chat.completions.with_raw_response.create(model=COMPAT_MODEL, messages=HI)
            raw.parse()
            return raw.status_code, "openai", raw
        except (openai.APIStatusError, anthropic.APIStatusError) as exc:
            return exc.status_code, "anthropic" if n % 2 else "openai", exc.response

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * PER_MINUTE + [429] * (12 - PER_MINUTE), statuses
    assert len(cluster.compat.requests_to("/v1/chat/completions")) == PER_MINUTE  # the upstream saw the admitted ones
    served = {cluster.replica_of(response) for _, _, response in results}
    assert served == {0, 1, 2}, f"the twelve requests reached only replicas {served}"
    for status, dialect, response in results:
        if status != 429:
            continue
        assert int(response.headers["retry-after"]) >= 1
        body = response.json()
        if dialect == "anthropic":
            assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error", body
        else:
            assert body["error"]["message"] and body["error"]["type"], body
    for n in range(3):  # the budget is spent on every replica, and the unlimited key is untouched
        pinned = cluster.openai(base_url=cluster.replicas[n].base_url, api_key=LIMITED_KEY)
        with pytest.raises(openai.RateLimitError):
            pinned.chat.completions.create(model=COMPAT_MODEL, messages=HI)
        assert cluster.openai(base_url=cluster.replicas[n].base_url).chat.completions.create(
            model=COMPAT_MODEL, messages=HI).choices[0].message.content
