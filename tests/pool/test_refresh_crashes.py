"""kill -9 during refreshes, again and again: the tokens file keeps one token per account.

A child process runs the gateway's refresh loop as `chatbridge serve` would (pool lifecycle,
the embedded state store flushing once a second) and is SIGKILLed: at random moments, and
inside each fsync of a replacement, including the one right after the rename, before anything
else could be saved. Every restart must find a consistent file, and the next refresh replaces
each account's token instead of keeping the old one as an orphan.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from chatbridge.pool.sources import read_tokens_entries

REPO = Path(__file__).resolve().parents[2]
ACCOUNTS = [f"user{i}@example.com" for i in range(8)]

_CHILD = textwrap.dedent("""
    import asyncio, os, sys, time, uuid
    from pathlib import Path
    from chatbridge.core.secrets import Secret
    from chatbridge.pool.lifecycle import LifecycleSettings, PoolLifecycle
    from chatbridge.pool.pool import CredentialPool
    from chatbridge.pool.refresher import RefreshSettings, TokenRefresher
    from chatbridge.pool.signin import SignedToken, SignInPolicy
    from chatbridge.pool.sources import TokensFileSource, jwt_credential
    from chatbridge.state import EmbeddedStore

    folder, hang_at, rounds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if hang_at:  # the n-th fsync of the first refresh announces itself and hangs until killed
        real_fsync, calls = os.fsync, [0]
        def fsync(fd):
            calls[0] += 1
            if calls[0] == hang_at:
                (folder / "marker").write_text("inside fsync")
                time.sleep(60)
            real_fsync(fd)

    async def sign_in(email, password):
        return SignedToken(Secret(f"tok-{email}-{uuid.uuid4().hex}"))

    async def main():
        settings = RefreshSettings(folder / "accounts.txt", folder / "tokens.txt", policy=SignInPolicy(backoff=0))
        store = EmbeddedStore(folder / "pool-state.json")
        lifecycle = PoolLifecycle(
            CredentialPool("p"), TokensFileSource(folder / "tokens.txt", lambda t, s, a: jwt_credential("p", t, s, a)),
            settings=LifecycleSettings(), store=store,
            refresher_factory=lambda lc: TokenRefresher(settings, sign_in, lc.known_tokens, lc.after_refresh),
        )
        await lifecycle.astart()
        startup = lifecycle.refresher.current
        if startup is not None:
            await startup
        if hang_at:
            os.fsync = fsync
        print("running", flush=True)
        for _ in range(rounds):
            result = await lifecycle.refresher.trigger("loop", force=True)
            assert result.ok, result.message
        await lifecycle.aclose()
        await store.aclose()

    asyncio.run(main())
""")


def _start(folder: Path, hang_at: int = 0, rounds: int = 1_000_000) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(folder), str(hang_at), str(rounds)],
                            env=env, stdout=subprocess.PIPE, text=True)


def _wait_running(child: subprocess.Popen[str]) -> None:
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "running", f"the child did not start (exit {child.poll()})"


def _kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


def _check_consistent(folder: Path) -> None:
    """Whatever moment the kill hit, the file holds a whole refresh: one token per account, each annotated."""
    entries = read_tokens_entries(folder / "tokens.txt")
    assert sorted(e.account or "?" for e in entries) == ACCOUNTS, [e.account for e in entries]
    assert all(e.token.startswith(f"tok-{e.account}-") for e in entries)


def test_repeated_kill_9_during_refreshes_never_leaves_orphans(tmp_path: Path) -> None:
    (tmp_path / "accounts.txt").write_text("".join(f'{{"email": "{a}", "password": "pw"}}\n' for a in ACCOUNTS))
    rng = random.Random(10)
    kills = 0
    for hang_at in (1, 2, 3):  # inside the new file's fsync, the backup's, and the folder's after the rename
        child = _start(tmp_path, hang_at)
        _wait_running(child)
        deadline = time.monotonic() + 30
        while not (tmp_path / "marker").exists():
            assert child.poll() is None and time.monotonic() < deadline, "the child never reached that fsync"
            time.sleep(0.01)
        _kill(child)
        (tmp_path / "marker").unlink()
        kills += 1
        _check_consistent(tmp_path)
    while kills < 15:  # and at random moments of a refresh loop
        child = _start(tmp_path)
        _wait_running(child)
        time.sleep(rng.uniform(0.0, 0.6))
        _kill(child)
        kills += 1
        _check_consistent(tmp_path)
    finisher = _start(tmp_path, rounds=1)  # a clean start and one more refresh
    _wait_running(finisher)
    assert finisher.wait(timeout=60) == 0
    _check_consistent(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".pending"))] == []
