"""`chatbridge serve` killed -9 in the middle of writing its files, then started again.

The kill lands inside the fsync of a temporary file (the pool state, a generated key, the tokens
file during a refresh): the moment a half-written file would exist if writes were not atomic.
The next start must find the previous file intact and remove the leftover, by lock ownership
(the killed process held the file's lock, and the kernel released it): not by age, since the
leftover is seconds old.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from tests.harness import GatewayProcess
from tests.pool.helpers import wait_for, write_accounts
from tests.upstreams import K2ThinkEmulator

CLIENT_KEY = "sk-client-killed-writes-0123456789"
ADMIN_KEY = "sk-admin-killed-writes-0123456789"

# `chatbridge serve`, except that an fsync of a temporary file whose name matches argv[1] hangs
# (after saying so in `marker`) until the process is killed.
_SERVE_HANGING_IN_FSYNC = textwrap.dedent("""
    import os, re, sys, time
    pattern, marker = re.compile(sys.argv.pop(1)), sys.argv.pop(1)
    real_fsync = os.fsync
    def fsync(fd):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if pattern.search(os.path.basename(name)):
            open(marker, "w").write(name)
            time.sleep(120)
        real_fsync(fd)
    os.fsync = fsync
    sys.argv = ["chatbridge", "serve"]
    from chatbridge.commands import main
    main()
""")


def _hanging(env: dict[str, str], cwd: Path, pattern: str, marker: Path) -> GatewayProcess:
    return GatewayProcess(env, cwd, command=[sys.executable, "-c", _SERVE_HANGING_IN_FSYNC, pattern, str(marker)])


def _launch(process: GatewayProcess) -> subprocess.Popen[bytes]:
    """Start without waiting for /health (the write may hang before the server listens)."""
    log = process.log_path.open("ab")
    process.proc = subprocess.Popen(process.command, cwd=process.cwd, env=process.env, stdout=log, stderr=subprocess.STDOUT)
    return process.proc


def _kill_when_hanging(process: GatewayProcess, marker: Path) -> None:
    proc = process.proc
    assert proc is not None
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, timeout=40)
        assert proc.poll() is None, f"the gateway exited before the write:\n{process.output}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".pending")))


def test_a_pool_state_write_killed_mid_way_is_cleaned_at_the_next_start(k2emu: K2ThinkEmulator, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"DATA_DIR": str(data), "K2THINK_BASE_URL": k2emu.base_url, "K2THINK_TOKEN": k2emu.mint_token(),
           "VALID_API_KEY": CLIENT_KEY, "ADMIN_API_KEY": ADMIN_KEY}
    first = GatewayProcess(env, tmp_path).start()  # writes a complete pool-state.json
    wait_for(lambda: (data / "pool-state.json").exists(), timeout=20)
    first.stop()
    before = (data / "pool-state.json").read_bytes()

    marker = tmp_path / "marker"
    killed = _hanging(env, tmp_path, r"^\.pool-state\.json\..*\.tmp$", marker)
    _launch(killed)
    _kill_when_hanging(killed, marker)
    assert (data / "pool-state.json").read_bytes() == before
    assert [n for n in _temporaries(data) if n.startswith(".pool-state.json.")], "the kill should leave a temporary file"

    again = GatewayProcess(env, tmp_path).start()
    try:
        assert _temporaries(data) == []
        assert httpx.get(again.base_url + "/health").status_code == 200
    finally:
        again.stop()


def test_a_key_generation_killed_mid_way_is_cleaned_and_a_key_made_at_the_next_start(
    k2emu: K2ThinkEmulator, tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = {"DATA_DIR": str(data), "K2THINK_BASE_URL": k2emu.base_url, "ADMIN_API_KEY": ADMIN_KEY}
    marker = tmp_path / "marker"
    killed = _hanging(env, tmp_path, r"^\.api_key\..*\.tmp$", marker)
    _launch(killed)
    _kill_when_hanging(killed, marker)
    assert not (data / "api_key").exists() and _temporaries(data) != []

    again = GatewayProcess(env, tmp_path).start()
    try:
        key = (data / "api_key").read_text().strip()
        assert key.startswith("sk-cb-") and _temporaries(data) == []
        reply = httpx.get(again.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert reply.status_code == 200
    finally:
        again.stop()


def test_a_tokens_file_refresh_killed_mid_way_is_cleaned_at_the_next_start(k2emu: K2ThinkEmulator, tmp_path: Path) -> None:
    accounts = [(f"user{i}@example.com", f"pw-{i}-secret") for i in range(2)]
    for email, password in accounts:
        k2emu.add_account(email, password)
    write_accounts(tmp_path / "accounts.txt", accounts)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# mine\n{k2emu.mint_token()}\n")
    before = tokens.read_bytes()
    env = {"DATA_DIR": str(tmp_path / "data"), "K2THINK_BASE_URL": k2emu.base_url, "TOKENS_FILE": str(tokens),
           "ACCOUNTS_FILE": str(tmp_path / "accounts.txt"), "ENABLE_TOKEN_AUTO_UPDATE": "true",
           "TOKEN_REFRESH_MIN_INTERVAL": "0", "VALID_API_KEY": CLIENT_KEY, "ADMIN_API_KEY": ADMIN_KEY}
    marker = tmp_path / "marker"
    killed = _hanging(env, tmp_path, r"^\.tokens\.txt\..*\.tmp$", marker).start()
    try:
        httpx.post(killed.base_url + "/admin/tokens/updater/force-update", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                   timeout=0.5)
    except httpx.TimeoutException:
        pass  # the refresh is hanging in its write, as intended
    _kill_when_hanging(killed, marker)
    assert tokens.read_bytes() == before and _temporaries(tmp_path) != []

    again = GatewayProcess(env, tmp_path).start()
    try:
        deadline = time.monotonic() + 5
        while _temporaries(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _temporaries(tmp_path) == []
        assert tokens.read_bytes() == before  # not refreshed yet at start, and never half-written
    finally:
        again.stop()
