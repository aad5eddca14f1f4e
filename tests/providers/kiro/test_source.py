"""Kiro credentials and their renewal, against the emulator's real refresh endpoints: nothing a user stored is lost."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatbridge.core.credentials import Credential
from chatbridge.pool.source import RenewalRejected
from chatbridge.providers.http import HttpSettings
from chatbridge.providers.kiro import files
from chatbridge.providers.kiro.credentials import account_of
from chatbridge.providers.kiro.refresh import KiroAuthClient, RefreshFailed
from chatbridge.providers.kiro.settings import KiroSettings
from chatbridge.providers.kiro.source import KiroCredentialSource, KiroSourceConfig
from tests.upstreams import KiroEmulator

HTTP = HttpSettings(request_timeout=10, idle_timeout=10)


def make_source(emu: KiroEmulator, tmp_path: Path, token_file: Path, **config: Any) -> KiroCredentialSource:
    settings = KiroSettings(_env_file=None, kiro_auth_base=emu.base_url, kiro_oidc_base=emu.base_url,  # type: ignore[call-arg]
                            kiro_api_base=emu.base_url)
    values: dict[str, Any] = {"token_file": token_file, "default_token_file": False, "data_dir": tmp_path / "data",
                              "home": tmp_path / "home", "lock_timeout": 5.0, **config}
    return KiroCredentialSource(KiroSourceConfig(**values), KiroAuthClient(settings.endpoints(), HTTP))


def renew(source: KiroCredentialSource, credential: Credential) -> Credential:
    async def run() -> Credential:
        try:
            return await source.renew(credential)
        finally:
            await source.auth.aclose()

    return asyncio.run(run())


def test_a_social_login_is_renewed_and_the_rotated_token_written_back(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    account = kiro_emu.add_account()
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", account, expired=True)
    data = json.loads(path.read_text())
    data["someIdeField"] = {"kept": True}
    path.write_text(json.dumps(data))
    path.chmod(0o640)
    source = make_source(kiro_emu, tmp_path, path)
    [credential] = source.load()
    assert credential.expires_at is not None and credential.expires_at < __import__("time").time()
    old_refresh = account.refresh_token

    fresh = renew(source, credential)

    assert fresh.id == credential.id and fresh.secret.reveal() == account.access_token
    on_disk = json.loads(path.read_text())
    assert on_disk["refreshToken"] == account.refresh_token != old_refresh  # the rotated one, on disk
    assert on_disk["accessToken"] == account.access_token and on_disk["someIdeField"] == {"kept": True}
    assert on_disk["expiresAt"].endswith("Z") and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert kiro_emu.refresh_calls == [{"path": "/refreshToken", "refreshToken": old_refresh}]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_an_idc_login_is_renewed_with_its_client_registration(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    account = kiro_emu.add_account("idc")
    path = kiro_emu.write_idc_files(tmp_path / "kiro-auth-token.json", account, expired=True)
    source = make_source(kiro_emu, tmp_path, path, profile_arn="arn:aws:codewhisperer:us-east-1:1:profile/X")
    [credential] = source.load()
    assert account_of(credential).auth == "idc" and len(source.watched) == 2  # the registration file is watched too
    fresh = renew(source, credential)
    assert fresh.secret.reveal() == account.access_token
    assert json.loads(path.read_text())["refreshToken"] == account.refresh_token
    [call] = kiro_emu.refresh_calls
    assert call["path"] == "/token" and call["clientId"] == account.client_id and call["grantType"] == "refresh_token"


def test_a_file_the_ide_already_refreshed_is_used_as_it_is(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    account = kiro_emu.add_account()
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", account)
    source = make_source(kiro_emu, tmp_path, path)
    [credential] = source.load()
    kiro_emu.expire(account)  # the IDE logs in again and writes a new login meanwhile
    kiro_emu.write_social_file(path, account)
    fresh = renew(source, credential)
    assert fresh.secret.reveal() == account.access_token and kiro_emu.refresh_calls == []


def test_invalid_grant_asks_the_user_to_log_in_again(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    account = kiro_emu.add_account()
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", account)
    account.refresh_token = "aor-revoked-by-a-newer-login"  # the file's token is dead now
    source = make_source(kiro_emu, tmp_path, path)
    [credential] = source.load()
    with pytest.raises(RenewalRejected, match="log in to Kiro again") as caught:
        renew(source, credential)
    assert json.loads(path.read_text())["refreshToken"] not in str(caught.value)


def test_a_failing_refresh_service_is_worth_another_try(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    account = kiro_emu.add_account()
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", account)
    kiro_emu.refresh_failures = [503]
    source = make_source(kiro_emu, tmp_path, path)
    [credential] = source.load()
    before = path.read_bytes()
    with pytest.raises(RefreshFailed, match="HTTP 503"):
        renew(source, credential)
    assert path.read_bytes() == before


def test_two_workers_renewing_at_once_refresh_once(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    """Each worker has its own source; the lock and the re-read make the second use the first one's token."""
    account = kiro_emu.add_account()
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", account, expired=True)
    first, second = make_source(kiro_emu, tmp_path, path), make_source(kiro_emu, tmp_path, path)
    [credential] = first.load()

    async def both() -> list[Credential]:
        try:
            return list(await asyncio.gather(first.renew(credential), second.renew(credential)))
        finally:
            await first.auth.aclose()
            await second.auth.aclose()

    results = asyncio.run(both())
    assert [r.secret.reveal() for r in results] == [account.access_token] * 2
    assert len(kiro_emu.refresh_calls) == 1 and account.refreshes == 1


def test_a_token_file_that_cannot_be_written_keeps_its_rotation_under_data_dir(
    kiro_emu: KiroEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = kiro_emu.add_account()
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", account, expired=True)

    def refuse(target: Path, data: bytes) -> None:
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("chatbridge.providers.kiro.source.replace_file", refuse)
    source = make_source(kiro_emu, tmp_path, path)
    [credential] = source.load()
    renew(source, credential)
    assert json.loads(path.read_text())["refreshToken"] != account.refresh_token  # the file is stale ...
    [again] = make_source(kiro_emu, tmp_path, path).load()  # ... and a restart continues from DATA_DIR
    assert again.secret.reveal() == account.access_token
    saved = (tmp_path / "data" / "kiro" / f"{credential.id}.json")
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600


def test_environment_tokens_rotate_across_restarts(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    """KIRO_REFRESH_TOKEN cannot be rewritten: its rotation lives under DATA_DIR and is picked up again."""
    account = kiro_emu.add_account()
    env = {"access_token": None, "refresh_token": account.refresh_token}
    missing = tmp_path / "absent.json"
    source = make_source(kiro_emu, tmp_path, missing, **env)
    [credential] = source.load()
    assert credential.expires_at == 0.0  # no access token yet: renewed before any use
    renew(source, credential)
    first_access = account.access_token
    [restarted] = make_source(kiro_emu, tmp_path, missing, **env).load()
    assert restarted.id == credential.id and restarted.secret.reveal() == first_access
    renew(make_source(kiro_emu, tmp_path, missing, **env), restarted)  # the rotated token works, the env's would not
    assert account.refreshes == 2


def test_api_keys_are_never_refreshed(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    source = make_source(kiro_emu, tmp_path, tmp_path / "absent.json", api_keys=("ksk_one", "ksk_two"))
    credentials = source.load()
    assert [account_of(c).is_api_key for c in credentials] == [True, True] and credentials[0].expires_at is None
    with pytest.raises(RenewalRejected, match="KIRO_API_KEY"):
        renew(source, credentials[0])


def test_globs_find_every_login_and_broken_files_are_named(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    folder = tmp_path / "logins"
    for index in range(3):
        kiro_emu.write_social_file(folder / f"account-{index}.json", kiro_emu.add_account())
    (folder / "broken.json").write_text("{not json")
    source = make_source(kiro_emu, tmp_path, tmp_path / "absent.json", token_patterns=(str(folder / "*.json"),))
    credentials = source.load()
    assert len({c.id for c in credentials}) == 3
    assert len(source.problems) == 1 and "broken.json" in source.problems[0]


# --- writing the file back: atomically, or in place on a mount ----------------------------------


def test_replace_file_keeps_the_mode_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text("old")
    path.chmod(0o604)
    files.replace_file(path, b"new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o604
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_replace_file_rewrites_in_place_when_rename_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.json"
    path.write_text("a much longer old content")
    inode = path.stat().st_ino

    real_replace = os.replace

    def busy(src: object, dst: object) -> None:  # a bind mount: only the file itself cannot be renamed onto
        if Path(str(dst)) == path:
            raise OSError(errno.EBUSY, "Device or resource busy")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", busy)
    files.replace_file(path, b"new")
    assert path.read_text() == "new" and path.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_replace_file_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    files.replace_file(link, b"new")
    assert link.is_symlink() and target.read_text() == "new"


@contextlib.contextmanager
def bind_mounted(source: Path, target: Path) -> Iterator[None]:
    target.touch()
    done = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_a_bind_mounted_token_file_is_renewed_in_place(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    """As `docker run -v ~/.aws/sso/cache/kiro-auth-token.json:/root/.aws/...` mounts it: rename is impossible."""
    account = kiro_emu.add_account()
    host_file = kiro_emu.write_social_file(tmp_path / "host" / "kiro-auth-token.json", account, expired=True)
    mounted = tmp_path / "container" / "kiro-auth-token.json"
    mounted.parent.mkdir()
    with bind_mounted(host_file, mounted):
        source = make_source(kiro_emu, tmp_path, mounted)
        [credential] = source.load()
        renew(source, credential)
        assert json.loads(mounted.read_text())["refreshToken"] == account.refresh_token
    assert json.loads(host_file.read_text())["refreshToken"] == account.refresh_token  # the host's file has it


@pytest.mark.parametrize("where", [".config/Kiro", "Library/Application Support/Kiro"])
def test_the_ides_own_login_takes_its_profile_from_the_ides_profile_json(kiro_emu: KiroEmulator, tmp_path: Path,
                                                                          where: str) -> None:
    """A social login without `profileArn` in its token file: the IDE's profile.json names it (Linux, macOS)."""
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", kiro_emu.add_account(), with_arn=False)
    profile = tmp_path / "home" / where / "User" / "globalStorage" / "kiro.kiroagent" / "profile.json"
    profile.parent.mkdir(parents=True)
    profile.write_text(json.dumps({"arn": "arn:aws:codewhisperer:us-east-1:1:profile/IDE", "name": "x"}))
    [credential] = make_source(kiro_emu, tmp_path, path, default_token_file=True).load()
    assert account_of(credential).profile_arn == "arn:aws:codewhisperer:us-east-1:1:profile/IDE"
    [other] = make_source(kiro_emu, tmp_path, path, default_token_file=False).load()  # another file: not the IDE's
    assert account_of(other).profile_arn is None
    profile.write_text("{not json")
    [broken] = make_source(kiro_emu, tmp_path, path, default_token_file=True).load()  # unreadable: asked for later
    assert account_of(broken).profile_arn is None


def test_kiro_region_moves_every_host_and_the_older_q_host_is_taken_as_the_api_base() -> None:
    regional = KiroSettings(_env_file=None, kiro_region="eu-central-1").endpoints()  # type: ignore[call-arg]
    assert regional.chat_url == "https://runtime.eu-central-1.kiro.dev/generateAssistantResponse"
    assert regional.models_url == "https://management.eu-central-1.kiro.dev/ListAvailableModels"
    assert regional.social_refresh_url(None) == "https://prod.eu-central-1.auth.desktop.kiro.dev/refreshToken"
    assert regional.idc_refresh_url(None) == "https://oidc.eu-central-1.amazonaws.com/token"
    assert regional.social_refresh_url("us-east-1") == "https://prod.us-east-1.auth.desktop.kiro.dev/refreshToken"
    older = KiroSettings(_env_file=None, kiro_api_base="https://q.us-east-1.amazonaws.com/").endpoints()  # type: ignore[call-arg]
    assert older.chat_url == "https://q.us-east-1.amazonaws.com/generateAssistantResponse"
    assert older.profiles_url == "https://q.us-east-1.amazonaws.com/ListAvailableProfiles"


def test_the_ides_profile_json_written_after_start_is_read_at_the_next_renewal(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    """A social refresh answer without profileArn: the IDE's profile.json (which it may write after its token file) names it."""
    kiro_emu.refresh_names_profile = False
    path = kiro_emu.write_social_file(tmp_path / "kiro-auth-token.json", kiro_emu.add_account(), expired=True, with_arn=False)
    source = make_source(kiro_emu, tmp_path, path, default_token_file=True)
    [credential] = source.load()
    assert account_of(credential).profile_arn is None
    profile = tmp_path / "home" / ".config" / "Kiro" / "User" / "globalStorage" / "kiro.kiroagent" / "profile.json"
    profile.parent.mkdir(parents=True)
    profile.write_text(json.dumps({"arn": "arn:aws:codewhisperer:us-east-1:1:profile/IDE"}))
    assert account_of(renew(source, credential)).profile_arn == "arn:aws:codewhisperer:us-east-1:1:profile/IDE"


def test_an_external_idp_login_is_renewed_and_the_rotation_kept(kiro_emu: KiroEmulator, tmp_path: Path) -> None:
    account = kiro_emu.add_account("external_idp")
    path = kiro_emu.write_external_idp_file(tmp_path / "kiro-auth-token.json", account, expired=True)
    source = make_source(kiro_emu, tmp_path, path)
    [credential] = source.load()
    old_refresh = account.refresh_token
    fresh = renew(source, credential)
    assert fresh.secret.reveal() == account.access_token and account_of(fresh).auth == "external_idp"
    assert json.loads(path.read_text())["refreshToken"] == account.refresh_token != old_refresh
    saved = source.rotations.newer(credential.id, old_refresh)  # kept under DATA_DIR too, before the file was rewritten
    assert saved is not None and saved.refresh_token == account.refresh_token
    assert saved.token_endpoint == kiro_emu.url("/oauth2/v2.0/token") and saved.scopes == "openid offline_access"


@pytest.mark.parametrize(("change", "problem"), [
    ({"tokenEndpoint": "http://idp.example.com/token", "issuerUrl": None}, "not https"),
    ({"tokenEndpoint": "https://user:pw@idp.example.com/token", "issuerUrl": None}, "credentials in it"),
    ({"issuerUrl": "https://login.example.com"}, "another host than its issuerUrl"),
    ({"clientId": None}, "names no clientId"),
    ({"tokenEndpoint": None}, "names no tokenEndpoint"),
])
def test_an_external_idp_refresh_token_goes_nowhere_unsafe(kiro_emu: KiroEmulator, tmp_path: Path, change: dict[str, Any],
                                                             problem: str) -> None:
    account = kiro_emu.add_account("external_idp")
    path = kiro_emu.write_external_idp_file(tmp_path / "kiro-auth-token.json", account, expired=True)
    data = {k: v for k, v in {**json.loads(path.read_text()), **change}.items() if v is not None}
    path.write_text(json.dumps(data))
    source = make_source(kiro_emu, tmp_path, path)
    [credential] = source.load()
    with pytest.raises(RenewalRejected, match=problem):
        renew(source, credential)
    assert kiro_emu.refresh_calls == [] and json.loads(path.read_text()) == data
