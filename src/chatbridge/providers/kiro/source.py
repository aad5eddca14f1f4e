"""Kiro's credential source: token files, the original tool's environment tokens and API keys, each renewed alone.

Renewing a token file: take its lock (another worker, or the IDE's next refresh, may be at it),
re-read it (the IDE may have refreshed or replaced it meanwhile, and its token is then used as
it is), refresh, save the new login under DATA_DIR, then write the file back (atomically, or in
place on a bind mount, keeping its permissions). A refused refresh disables that credential
with "log in to Kiro again"; the others carry on.

Replicas sharing the state store: the one that renews exports the new login with the
fingerprints of the refresh tokens it supersedes; another replica whose file (or
KIRO_REFRESH_TOKEN) still holds one of those saves it as its rotation and uses it.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbridge.core.credentials import Credential
from chatbridge.pool.source import CredentialSource, RenewalRejected
from chatbridge.providers.kiro.credentials import (
    account_of,
    api_key_credential,
    env_credential_id,
    file_credential_id,
    login_credential,
)
from chatbridge.providers.kiro.files import held, lock_path, replace_file
from chatbridge.providers.kiro.login import (
    KiroLogin,
    LoginFileError,
    parse_login,
    read_login,
    registration_path,
    updated_text,
)
from chatbridge.providers.kiro.profiles import ide_profile_arn
from chatbridge.providers.kiro.refresh import LOG_IN_AGAIN, KiroAuthClient
from chatbridge.providers.kiro.rotations import RotationStore, fingerprint, login_record

log = logging.getLogger("chatbridge.providers.kiro")

ADOPT_MARGIN = 60.0  # a token the IDE wrote is used as it is when it is valid for at least this long
LINEAGE_LIMIT = 32  # superseded refresh-token fingerprints kept per credential in a shared renewal


@dataclass(frozen=True, slots=True)
class KiroSourceConfig:
    token_file: Path  # KIRO_TOKEN_FILE, or the IDE's default
    default_token_file: bool  # whether it is the IDE's own (its profile.json applies)
    token_patterns: Sequence[str] = ()  # KIRO_TOKEN_FILES
    access_token: str | None = None
    refresh_token: str | None = None
    api_keys: Sequence[str] = ()
    profile_arn: str | None = None  # KIRO_PROFILE_ARN
    data_dir: Path = Path("./data")
    home: Path = field(default_factory=Path.home)
    lock_timeout: float = 30.0


class KiroCredentialSource(CredentialSource):
    renews = True

    def __init__(self, config: KiroSourceConfig, auth: KiroAuthClient) -> None:
        self.config = config
        self.auth = auth
        self.rotations = RotationStore(config.data_dir / "kiro")
        self.problems: list[str] = []  # what the last load skipped, for startup and check-config
        self._renewed: dict[str, tuple[KiroLogin, list[str]]] = {}  # id → latest login, fingerprints it supersedes
        self.renewal_listeners: list[Callable[[Credential], None]] = []  # told of every renewed credential

    # -- where credentials are -------------------------------------------------------------------

    def paths(self) -> list[Path]:
        """The token file and every match of KIRO_TOKEN_FILES, each once, in a stable order."""
        found: dict[Path, None] = {self.config.token_file: None}
        for pattern in self.config.token_patterns:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            found.update((Path(m), None) for m in matches)
        unique: dict[Path, Path] = {}
        for path in found:
            unique.setdefault(path.absolute(), path)
        return list(unique.values())

    @property
    def watched(self) -> Sequence[Path]:
        watched: list[Path] = []
        for path in self.paths():
            watched.append(path)
            beside = registration_path(path) if path.is_file() else None
            if beside is not None:
                watched.append(beside)
        return watched

    def load(self) -> list[Credential]:
        """Every credential there is now; a file that cannot be read is skipped and named in `problems`."""
        credentials: list[Credential] = []
        problems: list[str] = []
        for path in self.paths():
            if not path.is_file():
                continue
            try:
                credentials.append(self._file_credential(path))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{path}: {exc}")
        env = self._env_credential()
        if env is not None:
            credentials.append(env)
        credentials += [api_key_credential(key, self.config.profile_arn) for key in self.config.api_keys]
        for problem in problems:
            if problem not in self.problems:
                log.warning("kiro: skipping a token file that cannot be read: %s", problem)
        self.problems = problems
        return credentials

    def _file_credential(self, path: Path) -> Credential:
        credential_id = file_credential_id(path)
        login = self._current(credential_id, read_login(path))
        arn = self.config.profile_arn or login.profile_arn or self._ide_arn(path)
        return login_credential(credential_id, login, "file", path, arn)

    def _ide_arn(self, path: Path) -> str | None:
        """The IDE's `profile.json`, for the IDE's own login only (read again at each renewal: the IDE may
        write it after its token file)."""
        if self.config.default_token_file and path == self.config.token_file:
            return ide_profile_arn(self.config.home)
        return None

    def _env_credential(self) -> Credential | None:
        access, refresh = self.config.access_token, self.config.refresh_token
        if not access and not refresh:
            return None
        seed = refresh or access or ""
        credential_id = env_credential_id(seed)
        login = parse_login({"accessToken": access or "", "refreshToken": refresh, "authMethod": "social"},
                            source="KIRO_ACCESS_TOKEN/KIRO_REFRESH_TOKEN")
        return login_credential(credential_id, self.rotations.newer(credential_id, seed) or login, "env",
                                profile_arn=self.config.profile_arn)

    def _current(self, credential_id: str, login: KiroLogin) -> KiroLogin:
        """The file's login, or the saved one when the file still holds a refresh token we already exchanged."""
        return self.rotations.newer(credential_id, login.refresh_token) or login

    def exhausted_hint(self) -> str | None:
        return f"log in to Kiro again, or fix the token files ({', '.join(str(p) for p in self.paths())})"

    # -- renewal ---------------------------------------------------------------------------------

    async def renew(self, credential: Credential) -> Credential:
        account = account_of(credential)
        if account.is_api_key:
            raise RenewalRejected("the Kiro API key was refused and API keys cannot be refreshed: check KIRO_API_KEY")
        if account.origin == "file" and account.path is not None:
            fresh = await self._renew_file(credential, account.path)
        else:
            fresh = await self._renew_env(credential)
        for listener in self.renewal_listeners:
            listener(fresh)
        return fresh

    async def _renew_file(self, credential: Credential, path: Path) -> Credential:
        lock = lock_path(path, self.rotations.folder)
        async with held(lock, self.config.lock_timeout):
            try:
                current = await asyncio.to_thread(path.read_bytes)
                login = self._current(credential.id, await asyncio.to_thread(read_login, path))
            except FileNotFoundError:
                raise RenewalRejected(f"{path} no longer exists: {LOG_IN_AGAIN}") from None
            except LoginFileError as exc:
                raise RenewalRejected(f"{exc}: {LOG_IN_AGAIN}") from None
            if _usable_and_new(login, credential):
                log.info("kiro: %s already holds a newer access token; using it", path.name)
                return self._file_credential(path)
            fresh = await self.auth.refresh(login, path.name)
            self._supersede(credential.id, fresh, login.refresh_token)
            await asyncio.to_thread(self.rotations.save, credential.id, login.refresh_token, fresh)
            try:
                await asyncio.to_thread(replace_file, path, updated_text(current, fresh))
            except OSError as exc:  # the rotation is saved under DATA_DIR and used from there
                log.error("kiro: could not write the renewed login back to %s (%s); it is kept in %s",
                          path, exc.strerror or exc, self.rotations.path(credential.id))
        arn = self.config.profile_arn or fresh.profile_arn or account_of(credential).profile_arn
        if arn is None:  # a social refresh answer names it; else the IDE's profile.json may (written since)
            arn = await asyncio.to_thread(self._ide_arn, path)
        return login_credential(credential.id, fresh, "file", path, arn)

    async def _renew_env(self, credential: Credential) -> Credential:
        seed = self.config.refresh_token or self.config.access_token or ""
        async with held(self.rotations.lock(credential.id), self.config.lock_timeout):
            saved = await asyncio.to_thread(self.rotations.newer, credential.id, seed)
            if saved is not None and _usable_and_new(saved, credential):
                return login_credential(credential.id, saved, "env", profile_arn=self.config.profile_arn)
            base = saved or parse_login({"accessToken": self.config.access_token or "", "refreshToken": self.config.refresh_token,
                                         "authMethod": "social"}, source="KIRO_REFRESH_TOKEN")
            if not base.refresh_token:
                raise RenewalRejected("KIRO_ACCESS_TOKEN was refused and no KIRO_REFRESH_TOKEN is set to renew it")
            fresh = await self.auth.refresh(base, "KIRO_REFRESH_TOKEN")
            self._supersede(credential.id, fresh, seed, base.refresh_token)
            await asyncio.to_thread(self.rotations.save, credential.id, seed, fresh)
        return login_credential(credential.id, fresh, "env", profile_arn=self.config.profile_arn or fresh.profile_arn)


    # -- replicas ----------------------------------------------------------------------------------

    def _supersede(self, credential_id: str, fresh: KiroLogin, *spent: str | None) -> None:
        ancestors = list(self._renewed.get(credential_id, (fresh, []))[1])
        for token in spent:
            if token and fingerprint(token) not in ancestors:
                ancestors.append(fingerprint(token))
        self._renewed[credential_id] = (fresh, ancestors[-LINEAGE_LIMIT:])

    def export_renewal(self, credential: Credential) -> dict[str, Any] | None:
        renewed = self._renewed.get(credential.id)
        if renewed is None:
            return None
        return {"login": login_record(renewed[0]), "ancestors": renewed[1]}

    def import_renewal(self, credential_id: str, record: dict[str, Any]) -> Credential | None:
        data, ancestors = record.get("login"), record.get("ancestors")
        if not isinstance(data, dict) or not isinstance(ancestors, list):
            return None
        try:
            login = parse_login(data, source="a shared renewal")
        except LoginFileError:
            return None
        hashes = [h for h in ancestors if isinstance(h, str)]
        for path in self.paths():
            if path.is_file() and file_credential_id(path) == credential_id:
                return self._import_file(credential_id, path, login, hashes)
        seed = self.config.refresh_token or self.config.access_token or ""
        if seed and env_credential_id(seed) == credential_id and fingerprint(seed) in hashes:
            self.rotations.save(credential_id, seed, login)
            self._renewed[credential_id] = (login, hashes)
            return login_credential(credential_id, login, "env", profile_arn=self.config.profile_arn or login.profile_arn)
        return None

    def _import_file(self, credential_id: str, path: Path, login: KiroLogin, hashes: list[str]) -> Credential | None:
        try:
            on_file = read_login(path)
        except (OSError, UnicodeDecodeError, LoginFileError):
            return None
        current = self._current(credential_id, on_file)
        if on_file.refresh_token == login.refresh_token or current.refresh_token == login.refresh_token:
            return self._file_credential(path)  # the file (or our rotation) already holds it
        if not {fingerprint(on_file.refresh_token), fingerprint(current.refresh_token)} & set(hashes):
            return None  # a login the user put in place since: it wins
        self.rotations.save(credential_id, on_file.refresh_token, login)
        self._renewed[credential_id] = (login, hashes)
        return self._file_credential(path)


def _usable_and_new(login: KiroLogin, credential: Credential) -> bool:
    """Someone else (the IDE, another worker) renewed it already: a different token with time left."""
    fresh = login.access_token and login.access_token != credential.secret.reveal()
    return bool(fresh) and (login.expires_at is None or login.expires_at > time.time() + ADOPT_MARGIN)
