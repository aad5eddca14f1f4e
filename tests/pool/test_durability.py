"""Nothing a user stored is lost or half-written: crashes mid-write, concurrent writers, hand edits.

Crashes are real: a child process is SIGKILLed while it is inside `fsync`, the moment a
half-written file would be on disk if the write were not atomic.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chatbridge.core.credentials import Credential
from chatbridge.core.secrets import Secret
from chatbridge.pool.lifecycle import LifecycleSettings, PoolLifecycle
from chatbridge.pool.pool import CredentialPool
from chatbridge.pool.sources import TokensFileSource, read_tokens_file
from chatbridge.pool.tokens_file import (
    TokensFileChanged,
    backup_path,
    exclusive_lock,
    replace_tokens_file,
    signature,
)
from chatbridge.state import MemoryStore

REPO = Path(__file__).resolve().parents[2]

# Runs `what` in a child whose n-th fsync announces itself and then hangs until killed.
_CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    marker, nth = Path(sys.argv[1]), int(sys.argv[2])
    real_fsync, calls = os.fsync, [0]
    def fsync(fd):
        calls[0] += 1
        if calls[0] == nth:
            marker.write_text("inside fsync")
            time.sleep(60)
        real_fsync(fd)
    os.fsync = fsync
    exec(sys.argv[3])
""")


def _kill_inside_fsync(tmp_path: Path, nth: int, code: str) -> None:
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(marker), str(nth), code], env=env)
    try:
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert child.poll() is None, "the child finished without reaching fsync"
            assert time.monotonic() < deadline, "the child never reached fsync"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=10)
    marker.unlink()


@pytest.mark.parametrize("nth", [1, 2], ids=["writing-the-new-file", "writing-the-backup"])
def test_a_crash_mid_replacement_leaves_the_old_file_and_its_leftovers_are_cleaned(tmp_path: Path, nth: int) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("# mine\nold-token-1\nold-token-2\n")
    before = path.read_bytes()
    code = f"from chatbridge.pool.tokens_file import replace_tokens_file; replace_tokens_file(Path({str(path)!r}), ['new-1', 'new-2'])"
    _kill_inside_fsync(tmp_path, nth, code)

    assert path.read_bytes() == before
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the crash should have left a temporary file behind"
    if backup_path(path).exists():  # only ever a complete copy
        assert backup_path(path).read_bytes() == before

    lifecycle = PoolLifecycle(CredentialPool("p"), TokensFileSource(path, _credential), settings=LifecycleSettings(), store=MemoryStore())

    async def start() -> None:
        await lifecycle.astart()
        await lifecycle.aclose()

    asyncio.run(start())
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert [e.credential.secret.reveal() for e in lifecycle.pool.entries] == ["old-token-1", "old-token-2"]


def test_leftovers_are_not_cleaned_while_another_writer_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("t1\n")
    in_flight = tmp_path / ".tokens.txt.xyz.tmp"
    in_flight.write_text("another worker is writing this right now")
    lifecycle = PoolLifecycle(CredentialPool("p"), TokensFileSource(path, _credential), settings=LifecycleSettings(), store=MemoryStore())
    with exclusive_lock(path):
        lifecycle._clean_leftovers(path)
    assert in_flight.exists()
    lifecycle._clean_leftovers(path)
    assert not in_flight.exists()


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from chatbridge.pool.tokens_file import replace_tokens_file
    path, name = Path(sys.argv[1]), sys.argv[2]
    for _ in range(40):
        replace_tokens_file(path, [f"{name}-{i}" for i in range(50)])
""")


def test_concurrent_writers_never_expose_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    original = [f"orig-{i}" for i in range(50)]
    path.write_text("\n".join(original) + "\n")
    complete = {tuple(original), *(tuple(f"{name}-{i}" for i in range(50)) for name in ("a", "b"))}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name], env=env) for name in ("a", "b")]
    reads = 0
    try:
        while any(w.poll() is None for w in writers):
            assert tuple(read_tokens_file(path)) in complete
            if backup_path(path).exists():
                assert tuple(read_tokens_file(backup_path(path))) in complete
            reads += 1
    finally:
        for writer in writers:
            writer.wait(timeout=60)
    assert [w.returncode for w in writers] == [0, 0]
    assert reads > 10 and tuple(read_tokens_file(path)) in complete
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_replacement_refuses_to_overwrite_an_edit_it_did_not_read(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("t1\n")
    seen = signature(path)
    with path.open("a") as handle:
        handle.write("added-by-hand\n")
    with pytest.raises(TokensFileChanged):
        replace_tokens_file(path, ["fresh"], expected=seen)
    assert path.read_text() == "t1\nadded-by-hand\n" and not backup_path(path).exists()
    with pytest.raises(TokensFileChanged):
        replace_tokens_file(tmp_path / "new.txt", ["fresh"], expected=seen)  # appeared vs. expected
    replace_tokens_file(tmp_path / "new.txt", ["fresh"], expected=None)  # expected absent, still absent
    assert read_tokens_file(tmp_path / "new.txt") == ["fresh"]
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _credential(token: str, source: str, account: str | None) -> Credential:
    return Credential(id="id-" + token, secret=Secret(token), provider="p", source=source, account=account)


def test_hot_reload_waits_until_the_file_stops_changing(tmp_path: Path) -> None:
    """A slow writer (an editor, a script appending line by line) is never read half-way."""
    path = tmp_path / "tokens.txt"
    path.write_text("t0\n")
    settings = LifecycleSettings(reload_interval=0.02, settle=0.15)
    lifecycle = PoolLifecycle(CredentialPool("p"), TokensFileSource(path, _credential), settings=settings, store=MemoryStore())
    sizes: list[int] = []
    reload = lifecycle.reload

    def recording_reload() -> dict[str, int]:
        counts = reload()
        sizes.append(len(lifecycle.pool))
        return counts

    lifecycle.reload = recording_reload  # type: ignore[method-assign]

    async def run() -> None:
        await lifecycle.astart()
        with path.open("w") as handle:  # truncate, then one line every 50 ms
            for i in range(1, 11):
                handle.write(f"t{i}\n")
                handle.flush()
                await asyncio.sleep(0.05)
        deadline = time.monotonic() + 5
        while len(lifecycle.pool) != 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await lifecycle.aclose()

    asyncio.run(run())
    assert sizes[0] == 1 and sizes[-1] == 10
    assert set(sizes) <= {1, 10}, sizes  # never an empty or partial pool


def test_a_token_that_leaves_and_comes_back_keeps_its_health(tmp_path: Path) -> None:
    pool = CredentialPool("p", [_credential(t, "tokens_file", None) for t in ("a", "b")])
    entry = pool.find("id-a")
    assert entry is not None
    pool.disable(entry, "401 from upstream")
    pool.replace([_credential("b", "tokens_file", None)])  # removed by hand, or a file briefly empty
    pool.replace([_credential(t, "tokens_file", None) for t in ("a", "b")])
    back = pool.find("id-a")
    assert back is not None and back.disabled and back.disabled_reason == "401 from upstream"

    # Persisted health of credentials missing at start is kept for when they return.
    pool.replace([])
    saved = pool.export_health()
    fresh = CredentialPool("p")
    assert fresh.import_health(saved) == 0
    assert fresh.export_health()["id-a"]["disabled"] is True
    fresh.replace([_credential("a", "tokens_file", None)])
    assert fresh.find("id-a").disabled  # type: ignore[union-attr]
