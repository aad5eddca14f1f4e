"""Kimi's credentials: refresh tokens (from KIMI_REFRESH_TOKEN and KIMI_TOKENS_FILE) behind access tokens.

A credential's secret is the access token (15 minutes or so); renewing it spends the refresh
token, which rotates: the old one dies the moment Kimi answers. So the new refresh token is
stored durably before anything else happens, and a crash at any moment leaves a refresh token
that works on disk:

- a token is replaced in its line of its tokens file (every other line kept) by an atomic
  rename, under the file's writer lock, held from reading the line to writing it back: another
  worker never refreshes the same account in between, and a worker that finds the line rotated
  by someone else uses the new token;
- KIMI_REFRESH_TOKEN's values are copied into a tokens file the gateway keeps under DATA_DIR
  (`kimi-env-tokens.txt`), each under a comment holding a hash of the value it came from, so a
  restart with the same (now dead) value uses its successor, a new value (a fresh login)
  replaces it, and several workers share the rotations through the file as they would
  KIMI_TOKENS_FILE's (the embedded state store is one per process);
- if a file cannot be written (disk full), the successor goes to the state store
  (`kimi:refresh:<id>`, flushed before it is used), next to a hash of the line it replaces.

With replicas sharing the state store, the replica that renews an account exports its new
refresh and access tokens with the hashes of the tokens they supersede (`export_renewal`); the
others take them over (`import_renewal`) when the token they hold is one of those, so no replica
spends a dead token, and one that starts later begins from the newest.

A credential's id stays the same across rotations: it comes from the refresh token's user
(`sub`), or, for a token that is not a JWT, from the first token seen (the lineage is kept in
the state store). The guest source registers a device instead, whose id is kept in the store.

An access JWT given in place of a refresh token (kimi.md §2.1: `typ` "access") is used as it is
until its `exp`, never sent to a refresh and never rewritten; once expired, its account is
expired with a message saying a refresh token is needed (a refresh token for the same account,
put in its place, takes over). The account's refresh token wins when both are given.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbridge.core.credentials import Credential
from chatbridge.core.secrets import Secret
from chatbridge.pool.source import CredentialSource, RenewalRejected
from chatbridge.pool.sources import jwt_claims, read_tokens_file
from chatbridge.pool.tokens_file import TokensFileChanged, held_lock, replace_token_line
from chatbridge.providers.kimi.auth import RefreshFailed, Tokens
from chatbridge.providers.kimi.protocol import KimiIdentity, identity_from_claims, stable_digits
from chatbridge.state import Namespace
from chatbridge.state.files import write_private_file

log = logging.getLogger("chatbridge.kimi")

PROVIDER = "kimi"
GUEST_ID = "guest"
ENV_FILE_NAME = "kimi-env-tokens.txt"  # under DATA_DIR: KIMI_REFRESH_TOKEN's tokens and their successors
_SEED_MARK = "# from KIMI_REFRESH_TOKEN value "
LINEAGE_LIMIT = 32  # superseded token hashes kept per account in a shared renewal


def _seeded(text: str) -> dict[str, str]:
    """The env file's tokens by the hash of the KIMI_REFRESH_TOKEN value each one descends from."""
    found: dict[str, str] = {}
    origin: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(_SEED_MARK):
            origin = stripped[len(_SEED_MARK) :].strip()
        elif stripped and not stripped.startswith("#") and origin is not None:
            found[origin] = stripped
            origin = None
    return found

Refresh = Callable[[KimiIdentity, str], Awaitable[Tokens]]
Register = Callable[[KimiIdentity], Awaitable[str]]


ACCESS_ONLY = ("an access token cannot be renewed: put the account's refresh_token (kimi.com → DevTools → Application → "
               "Local Storage) in KIMI_TOKENS_FILE or KIMI_REFRESH_TOKEN instead")
ACCESS_EXPIRY_MARGIN = 60.0  # a refusal this close to `exp` is the expiry (clocks differ), not a dead token


class AccessTokenExpired(Exception):
    """An access token given as the credential has expired: nothing can renew it, a refresh token is needed."""


def is_access_token(token: str) -> bool:
    """An access JWT rather than a refresh token, as kimi.md §2.1 tells them apart (`typ`, `app_id`)."""
    claims = jwt_claims(token)
    return claims.get("typ") == "access" and claims.get("app_id", "kimi") == "kimi"


def token_hash(token: str) -> str:
    return hashlib.sha256(f"{PROVIDER}:{token}".encode()).hexdigest()[:16]


def account_id(refresh_token: str) -> str:
    """Stable across rotations when the token names its user; else a hash of this token."""
    sub = jwt_claims(refresh_token).get("sub")
    seed = f"user:{sub}" if isinstance(sub, str) and sub else f"token:{refresh_token}"
    return hashlib.sha256(f"{PROVIDER}:{seed}".encode()).hexdigest()[:12]


@dataclass(slots=True)
class Account:
    """One Kimi account: its current refresh token, where it is kept, and its access token if any."""

    id: str
    refresh: str
    origin: str  # "env" or "tokens_file"
    on_record: str  # the token as KIMI_REFRESH_TOKEN or the file line has it (its successor may be in the store)
    access: str | None = None
    expires_at: float | None = None
    issued_at: float | None = None
    identity: KimiIdentity = field(default_factory=lambda: KimiIdentity("0", "0"))
    user: str | None = None
    renewable: bool = True  # False: the token on record is an access token, used until it expires

    def credential(self) -> Credential:
        expires_at = self.expires_at if self.access else 0.0  # no access token yet: due for renewal now
        return Credential(id=self.id, secret=Secret(self.access or ""), provider=PROVIDER, source=self.origin,
                          account=self.user, expires_at=expires_at, issued_at=self.issued_at,
                          extra={"identity": self.identity, "renewable": self.renewable})

    def take_access(self, access: str) -> None:
        claims = jwt_claims(access)
        self.access = access
        exp, iat = claims.get("exp"), claims.get("iat")
        self.expires_at = float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
        self.issued_at = float(iat) if isinstance(iat, (int, float)) and not isinstance(iat, bool) else None
        self.identity = identity_from_claims(claims, self.id) if claims else self.identity
        sub = claims.get("sub")
        if isinstance(sub, str) and sub:
            self.user = sub


class KimiTokenSource(CredentialSource):
    """Refresh tokens from the environment and the tokens file; see the module docstring."""

    renews = True

    def __init__(self, env_tokens: Sequence[str], tokens_file: Path | None, store: Namespace, refresh: Refresh,
                 *, env_file: Path | None = None, lock_wait: float = 30.0) -> None:
        self.env_tokens = list(env_tokens)
        self.tokens_file = tokens_file
        # Where env tokens and their successors live: a tokens file the gateway keeps under DATA_DIR.
        self.env_file = env_file if self.env_tokens else None
        if self.env_tokens and self.env_file is None:
            raise ValueError("env tokens need a file to keep their rotated successors in")
        self.store = store
        self.refresh = refresh
        self.lock_wait = lock_wait
        self._accounts: dict[str, Account] = {}
        self._rotated: dict[str, dict[str, str]] = {}  # account id → {"token", "origin"}: a file write failed
        self._lineage: dict[str, str] = {}  # token hash → account id, for tokens that are not JWTs
        self._ancestors: dict[str, list[str]] = {}  # account id → hashes of the refresh tokens it rotated past
        self._loaded: set[str] = set()  # the account ids of the last load

    @property
    def files(self) -> list[tuple[Path, str]]:
        """(file, origin) of every file tokens are read from and written back to."""
        found = [(self.tokens_file, "tokens_file")] if self.tokens_file is not None else []
        return found + ([(self.env_file, "env")] if self.env_file is not None else [])

    @property
    def watched(self) -> Sequence[Path]:
        return [path for path, _ in self.files]

    async def aopen(self) -> None:
        for key in await self.store.keys("refresh:"):
            value = await self.store.get(key)
            if isinstance(value, dict) and isinstance(value.get("token"), str) and isinstance(value.get("origin"), str):
                self._rotated[key.removeprefix("refresh:")] = value
        for key in await self.store.keys("lineage:"):
            value = await self.store.get(key)
            if isinstance(value, str):
                self._lineage[key.removeprefix("lineage:")] = value
        if self.env_file is not None:
            await self._seed_env_file(self.env_file)

    async def _seed_env_file(self, path: Path) -> None:
        """Put KIMI_REFRESH_TOKEN's tokens into the gateway's own tokens file, keeping the rotated
        successors of values already there; a new value for an account (a fresh login) replaces its line."""
        async with held_lock(path, self.lock_wait) as locked:
            if not locked:
                log.warning("kimi: %s is locked by another writer; using it as it is", path)
                return
            await asyncio.to_thread(self._write_env_file, path)

    def _write_env_file(self, path: Path) -> None:
        kept = _seeded(path.read_text(encoding="utf-8")) if path.exists() else {}
        lines = ["# Kimi refresh tokens from KIMI_REFRESH_TOKEN, kept current by chatbridge (rotated on every refresh)"]
        for token in self.env_tokens:
            origin = token_hash(token)
            current = kept.get(origin)
            if current is None:  # a value not seen before: a new account or a fresh login
                current = token
            lines += [f"{_SEED_MARK}{origin}", current]
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_private_file(path, text)

    # -- loading ----------------------------------------------------------------------------------

    def load(self) -> list[Credential]:
        chosen: dict[str, tuple[str, str]] = {}  # account id → (token, origin)
        for path, origin in self.files:
            if path.exists():
                for token in read_tokens_file(path):
                    key = self._id_for(token)
                    # The same account twice: the first token wins, but a refresh token over an access token.
                    if key not in chosen or (is_access_token(chosen[key][0]) and not is_access_token(token)):
                        chosen[key] = (token, origin)
        accounts = {key: self._known(key, self._effective(key, token), origin, token)
                    for key, (token, origin) in chosen.items()}
        self._accounts.update(accounts)
        self._loaded = set(accounts)
        return [account.credential() for account in accounts.values()]

    def _id_for(self, token: str) -> str:
        return self._lineage.get(token_hash(token)) or account_id(token)

    def _effective(self, key: str, on_record: str) -> str:
        """The token to use for a token on record: its successor in the store, if one was kept there."""
        rotated = self._rotated.get(key)
        return rotated["token"] if rotated is not None and rotated["origin"] == token_hash(on_record) else on_record

    def _known(self, key: str, refresh: str, origin: str, on_record: str) -> Account:
        """The account as loaded now, keeping the access token it already has (still good after a
        rotation elsewhere: access tokens are not revoked by a refresh)."""
        account = self._accounts.get(key)
        if account is None:
            account = Account(key, refresh, origin, on_record, identity=identity_from_claims(jwt_claims(refresh), key))
            sub = jwt_claims(refresh).get("sub")
            account.user = sub if isinstance(sub, str) and sub else None
        else:
            account.refresh, account.origin, account.on_record = refresh, origin, on_record
        account.renewable = not is_access_token(on_record)
        if not account.renewable and account.access != on_record:
            account.take_access(on_record)  # the credential itself, until its `exp`
        return account

    # -- renewing ---------------------------------------------------------------------------------

    async def renew(self, credential: Credential) -> Credential:
        account = self._accounts.get(credential.id)
        if account is None:
            raise RenewalRejected("this Kimi account is no longer configured")
        if not account.renewable:
            raise _access_only(account)
        path = self.env_file if account.origin == "env" else self.tokens_file
        if path is None:
            raise RenewalRejected("this Kimi account is no longer configured")
        await self._renew_in_file(account, path)
        return account.credential()

    async def _renew_in_file(self, account: Account, path: Path) -> None:
        async with held_lock(path, self.lock_wait) as locked:
            if not locked:
                raise RefreshFailed(f"{path.name} is locked by another writer; trying again later")
            on_record = await asyncio.to_thread(self._line_of, path, account.id)
            if on_record is None:
                raise RenewalRejected(f"its refresh token was removed from {path}")
            current = self._effective(account.id, on_record)
            tokens = await self.refresh(account.identity, current)
            account.refresh, account.on_record = current, on_record
            if tokens.refresh and tokens.refresh != current:
                self._supersede(account.id, current, on_record)
                try:  # durable before anything else: the old token is dead from now on
                    await asyncio.to_thread(replace_token_line, path, on_record, tokens.refresh)
                except (OSError, TokensFileChanged) as exc:
                    log.error("kimi: could not write the rotated refresh token of account %s to %s (%s); "
                              "it is kept in the state store instead", account.id, path, exc)
                    await self._keep_in_store(account, tokens.refresh)
                else:
                    account.refresh = account.on_record = tokens.refresh
                    if self._rotated.pop(account.id, None) is not None:
                        await self.store.delete(f"refresh:{account.id}")
                    await self._remember_lineage(tokens.refresh, account.id)
            account.take_access(tokens.access)

    def _supersede(self, key: str, *tokens: str) -> None:
        ancestors = self._ancestors.setdefault(key, [])
        for token in tokens:
            digest = token_hash(token)
            if digest not in ancestors:
                ancestors.append(digest)
        del ancestors[:-LINEAGE_LIMIT]

    def export_renewal(self, credential: Credential) -> dict[str, Any] | None:
        account = self._accounts.get(credential.id)
        if account is None or not account.access:
            return None
        return {"refresh": account.refresh, "access": account.access, "ancestors": list(self._ancestors.get(account.id, ()))}

    def import_renewal(self, credential_id: str, record: dict[str, Any]) -> Credential | None:
        account = self._accounts.get(credential_id)
        refresh, access, ancestors = record.get("refresh"), record.get("access"), record.get("ancestors")
        if account is None or not isinstance(refresh, str) or not refresh or not isinstance(ancestors, list):
            return None
        hashes = [h for h in ancestors if isinstance(h, str)]
        if refresh != account.refresh and not {token_hash(account.refresh), token_hash(account.on_record)} & set(hashes):
            return None  # what this replica holds is not an ancestor: a new login the user put in place
        account.refresh = refresh
        if refresh != account.on_record:  # reloads of the (older) file line keep using the successor
            self._rotated[credential_id] = {"token": refresh, "origin": token_hash(account.on_record)}
        self._ancestors[credential_id] = hashes[-LINEAGE_LIMIT:]
        if isinstance(access, str) and access:
            account.take_access(access)
        return account.credential()

    def _line_of(self, path: Path, key: str) -> str | None:
        """The refresh token of account `key` in the file now (another worker may have rotated it)."""
        for token in read_tokens_file(path):
            if self._id_for(token) == key and not is_access_token(token):
                return token
        return None

    async def _keep_in_store(self, account: Account, token: str) -> None:
        """The successor of the token on record, durable in the state store before it is used."""
        record = {"token": token, "origin": token_hash(account.on_record)}
        await self.store.set(f"refresh:{account.id}", record)
        await self._remember_lineage(token, account.id)
        await self.store.flush()
        self._rotated[account.id] = record
        account.refresh = token

    async def _remember_lineage(self, token: str, key: str) -> None:
        if account_id(token) == key:
            return  # a JWT that names its user: no lineage needed
        self._lineage[token_hash(token)] = key
        await self.store.set(f"lineage:{token_hash(token)}", key)

    def exhausted_hint(self) -> str | None:
        where = " and ".join(n for n, on in (("KIMI_TOKENS_FILE", self.tokens_file), ("KIMI_REFRESH_TOKEN", self.env_file)) if on)
        hint = (f"Kimi access tokens are renewed from the refresh tokens in {where} (the log says why a renewal failed); "
                f"a refresh token Kimi refuses is dead: log in to kimi.com again and replace it")
        given = sum(1 for key in self._loaded if not self._accounts[key].renewable)
        if given:
            hint += f". {given} account(s) were given an access token, used only until it expires: {ACCESS_ONLY}"
        return hint

    def refresh_token_of(self, credential_id: str) -> str | None:
        """The current refresh token of an account (tests and diagnostics; never logged)."""
        account = self._accounts.get(credential_id)
        return account.refresh if account is not None else None


def _access_only(account: Account) -> Exception:
    """Why an account given an access token is not renewed: expired (or about to), or refused before that."""
    where = "KIMI_REFRESH_TOKEN" if account.origin == "env" else "KIMI_TOKENS_FILE"
    expires_at = account.expires_at
    if expires_at is not None and expires_at <= time.time() + ACCESS_EXPIRY_MARGIN:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires_at))
        return AccessTokenExpired(f"the access token {where} gives for Kimi account {account.id} expired at {when}; "
                                  f"{ACCESS_ONLY}")
    return RenewalRejected(f"Kimi refused the access token {where} gives for this account; {ACCESS_ONLY}")


class GuestSource(CredentialSource):
    """No account configured: one guest device registered with Kimi, its id kept in the state store."""

    renews = True

    def __init__(self, store: Namespace, register: Register, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.register = register
        self.clock = clock
        self._device: str | None = None
        self._access: str | None = None
        self._expires_at: float | None = None

    async def aopen(self) -> None:
        device = await self.store.get("guest:device")
        if not isinstance(device, str) or not device.isdigit():
            device = stable_digits(secrets.token_hex(16))
            await self.store.set("guest:device", device)
            await self.store.flush()
        self._device = device

    @property
    def identity(self) -> KimiIdentity:
        device = self._device or stable_digits(GUEST_ID)
        return KimiIdentity(device, stable_digits(device + ":session"))

    def load(self) -> list[Credential]:
        expires_at = self._expires_at if self._access else 0.0
        return [Credential(id=GUEST_ID, secret=Secret(self._access or ""), provider=PROVIDER, source="guest",
                           account="guest", expires_at=expires_at, extra={"identity": self.identity})]

    def export_renewal(self, credential: Credential) -> dict[str, Any] | None:
        return {"access": self._access, "expires_at": self._expires_at} if self._access else None

    def import_renewal(self, credential_id: str, record: dict[str, Any]) -> Credential | None:
        access, expires_at = record.get("access"), record.get("expires_at")
        if credential_id != GUEST_ID or not isinstance(access, str) or not access:
            return None
        self._access = access
        self._expires_at = float(expires_at) if isinstance(expires_at, (int, float)) and not isinstance(expires_at, bool) else None
        return self.load()[0]

    async def renew(self, credential: Credential) -> Credential:
        token = await self.register(self.identity)
        exp = jwt_claims(token).get("exp")
        self._access = token
        self._expires_at = float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
        return self.load()[0]
