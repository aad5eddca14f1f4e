"""Kimi's pool timing as its wiring builds it: renewals a few minutes before `exp`, as kimi.md's 2026 notes say."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from chatbridge.core.credentials import Credential
from chatbridge.core.secrets import Secret
from chatbridge.providers.http import HttpSettings
from chatbridge.providers.kimi.settings import KimiSettings
from chatbridge.providers.kimi.wiring import PLUGIN
from chatbridge.providers.wiring import PoolDefaults, WiringContext
from chatbridge.state import MemoryStore
from tests.providers.kimi.test_source import fake_jwt


def credential(cid: str, lifetime: float, *, renewable: bool = True) -> Credential:
    now = time.time()
    return Credential(id=cid, secret=Secret(f"token-{cid}-0123456789"), provider="kimi", issued_at=now,
                      expires_at=now + lifetime, extra={"renewable": renewable})


def test_kimi_renews_a_15_minute_token_1_to_4_minutes_before_exp_and_a_given_access_token_only_once_expired(
        tmp_path: Path) -> None:
    tokens = tmp_path / "kimi-tokens.txt"
    tokens.write_text(fake_jwt("user-1", 1) + "\n")
    context = WiringContext(HttpSettings(), PoolDefaults(), MemoryStore(), tmp_path)
    wiring = PLUGIN.build(KimiSettings(kimi_tokens_file=tokens, kimi_max_streams_per_account=1), context)
    try:
        lifecycle = wiring.lifecycle
        assert lifecycle is not None
        aheads = {cid: lifecycle.renew_ahead(credential(cid, 900)) for cid in "abcdefgh"}
        assert all(60 <= ahead <= 240 for ahead in aheads.values()), aheads
        assert len(set(aheads.values())) > 1  # with a jitter: accounts loaded together do not renew together
        assert 60 <= lifecycle.renew_ahead(credential("m", 30 * 86400)) <= 240  # a 30-day token too
        assert lifecycle.renew_ahead(credential("a", 900, renewable=False)) == 0.0  # nothing can renew it
    finally:
        for closer in wiring.closers:
            asyncio.run(closer.aclose())
