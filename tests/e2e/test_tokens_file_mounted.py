"""`chatbridge serve` with its tokens file bind-mounted on its own, as `docker run -v ./tokens.txt:/app/tokens.txt` does.

The gateway runs in a private mount namespace (`unshare -m`) where the host's file is mounted
over `app/tokens.txt`; a rename onto it fails with EBUSY there, exactly as in a container. A
refresh must still land in the host's file (rewritten in place, owner, permissions and the
user's comments kept), say so once in the log, and the gateway must answer with the new tokens.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import API_KEY, GatewayProcess
from tests.pool.helpers import wait_for, write_accounts
from tests.upstreams import K2ThinkEmulator

ADMIN_KEY = "sk-admin-mounted-tokens-0123456789"
ACCOUNTS = [(f"user{i}@example.com", f"pw-{i}-secret") for i in range(3)]


def _can_bind_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind / /mnt"], capture_output=True, timeout=10)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_bind_mount(), reason="needs `unshare -m` and `mount --bind` (root or CAP_SYS_ADMIN)")


def test_a_bind_mounted_tokens_file_is_refreshed_in_place(k2emu: K2ThinkEmulator, tmp_path: Path) -> None:
    for email, password in ACCOUNTS:
        k2emu.add_account(email, password)
    manual = k2emu.mint_token()
    host = tmp_path / "host-tokens.txt"
    host.write_text(f"# tokens for the team, keep this file private\n{manual}\n")
    host.chmod(0o640)
    inode = host.stat().st_ino
    app = tmp_path / "app"
    app.mkdir()
    target = app / "tokens.txt"
    target.touch()  # the mount point
    write_accounts(app / "accounts.txt", ACCOUNTS)
    env = {"K2THINK_BASE_URL": k2emu.base_url, "TOKENS_FILE": str(target), "ACCOUNTS_FILE": str(app / "accounts.txt"),
           "ENABLE_TOKEN_AUTO_UPDATE": "true", "TOKEN_REFRESH_MIN_INTERVAL": "0", "SIGNIN_RETRY_BACKOFF": "0.01",
           "VALID_API_KEY": API_KEY, "ADMIN_API_KEY": ADMIN_KEY, "DATA_DIR": str(app / "data")}
    command = ["unshare", "-m", "sh", "-c", f'mount --bind "{host}" "{target}" && exec "{sys.executable}" -m chatbridge serve']
    gateway = GatewayProcess(env, tmp_path, command=command).start()
    try:
        admin = httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
        for round_ in (1, 2):
            started = int(time.time())
            wait_for(lambda started=started: int(time.time()) > started, 3)  # type: ignore[misc]  # K2Think's JWTs are {id, exp}: a new second, a new token
            response = admin.post("/admin/tokens/updater/force-update")
            assert response.status_code == 200, response.text
            wait_for(lambda: all(k2emu.issued_tokens.get(e, [""])[-1] in host.read_text() for e, _ in ACCOUNTS), 20)
            assert len(k2emu.issued_tokens[ACCOUNTS[0][0]]) == round_
        reply = httpx.post(gateway.base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                           json={"model": "MBZUAI-IFM/K2-Think-v2", "messages": [{"role": "user", "content": "hi"}]},
                           timeout=30)
        assert reply.status_code == 200, reply.text
    finally:
        gateway.stop()
    text = host.read_text()
    assert text.count("# account: ") == 3 and manual in text  # new tokens, each with its account; one kept
    assert all(k2emu.issued_tokens[e][0] not in text for e, _ in ACCOUNTS)  # the first round's were replaced
    assert "# tokens for the team, keep this file private" in text
    assert host.stat().st_ino == inode and host.stat().st_mode & 0o777 == 0o640
    assert (app / "tokens.txt.backup").exists()
    assert not [p.name for p in app.iterdir() if p.name.endswith((".tmp", ".pending"))]
    assert gateway.output.count("rewritten in place") == 1, gateway.output
    assert "EBUSY" in gateway.output and "token refresh failed" not in gateway.output
