"""`chatbridge check-config` on Kiro logins: what is wrong with each, and how to fix it, never a secret."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from chatbridge import commands
from tests.e2e.kiro_helpers import ide_token_file
from tests.upstreams import KiroEmulator


def check(**env: str) -> tuple[int, str]:
    result = CliRunner().invoke(commands.app, ["check-config"], env=env)
    return result.exit_code, result.output


def test_logins_are_described_and_problems_explained(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    good = kiro_emu.write_social_file(tmp_path / "logins" / "good.json", kiro_emu.add_account(), expired=True)
    idc = kiro_emu.add_account("idc")
    orphan = kiro_emu.write_idc_files(tmp_path / "logins" / "idc.json", idc)
    for registration in orphan.parent.glob("*.json"):
        if registration.name not in ("good.json", "idc.json"):
            registration.unlink()  # the client registration went missing
    dead = tmp_path / "logins" / "dead.json"
    dead.write_text(json.dumps({"accessToken": "aoa-dead", "expiresAt": "2020-01-01T00:00:00.000Z"}))
    code, output = check(KIRO_TOKEN_FILES=str(tmp_path / "logins" / "*.json") + "," + str(tmp_path / "nothing" / "*.json"),
                         KIRO_API_KEY="not-a-kiro-key-0123456789", KIRO_PROFILE_ARN="profile-without-arn",
                         DATA_DIR=str(tmp_path / "data"), HOME=str(tmp_path / "home"))
    assert code == 1, output
    assert "social login; its access token has expired and is refreshed at start" in output
    assert "IdC login but its client registration (<clientIdHash>.json) is missing" in output
    assert "has expired and holds no refresh token" in output
    assert "matches no file" in output and "does not look like a Kiro API key" in output
    assert "'profile-without-arn' is not an ARN" in output
    for secret in (idc.refresh_token, idc.access_token, "not-a-kiro-key-0123456789"):
        assert secret not in output
    assert str(good) in output


def test_zero_configuration_is_named(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    home = tmp_path / "home"
    kiro_emu.write_social_file(ide_token_file(home), kiro_emu.add_account())
    code, output = check(HOME=str(home), DATA_DIR=str(tmp_path / "data"))
    assert code == 0, output
    assert "1 credential(s) configured (zero configuration: the IDE's login)" in output


def test_without_a_login_kiro_is_reported_off(tmp_path: Path) -> None:
    code, output = check(HOME=str(tmp_path / "home"), DATA_DIR=str(tmp_path / "data"))
    assert code == 0 and "kiro: disabled (no Kiro login at" in output


def test_an_external_idp_login_that_cannot_be_refreshed_is_named(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    account = kiro_emu.add_account("external_idp")
    path = kiro_emu.write_external_idp_file(tmp_path / "entra.json", account)
    code, output = check(KIRO_TOKEN_FILE=str(path), DATA_DIR=str(tmp_path / "data"), HOME=str(tmp_path / "home"))
    assert "external identity-provider login" in output and "cannot be refreshed" not in output, output
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "tokenEndpoint": "http://idp.example.com/token"}))
    code, output = check(KIRO_TOKEN_FILE=str(path), DATA_DIR=str(tmp_path / "data"), HOME=str(tmp_path / "home"))
    assert code == 1 and "has a tokenEndpoint that is not https, so it cannot be refreshed" in output, output
    assert account.refresh_token not in output
