"""Every client key the gateway accepts, from three sources, and what each request of one costs.

- `VALID_API_KEY` (env): unlimited keys, named `VALID_API_KEY` (`VALID_API_KEY-2`, ... when
  several); never revocable through the API.
- `CLIENT_KEYS_FILE` (file): re-read when it changes (checked every `poll_interval`); a broken
  edit keeps the last good set and logs why. Its keys are managed by editing the file, so the
  API does not revoke them.
- The admin API (api): added and revoked through `/admin/keys`, kept in the state store as
  digests under `clientkeys:key:<name>` with a `clientkeys:version` counter; every replica
  polls the counter every `poll_interval` (0.5 s), so a change is seen everywhere within a second.

A key is looked up by its SHA-256 digest: the presented key is hashed once and the digest
found in a dict, then compared with `hmac.compare_digest`; the time taken depends on the
digest, never on how many leading characters of a real key were guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from chatbridge.core.secrets import mask, register_secret
from chatbridge.features.clientkeys.limits import Admission, Limiter
from chatbridge.features.clientkeys.spec import (
    ClientKey,
    KeyEntry,
    KeyLimits,
    KeysFileError,
    describe_errors,
    digest,
    read_keys_file,
)
from chatbridge.features.clientkeys.usage import UsageRecorder
from chatbridge.state import StateStore

log = logging.getLogger("chatbridge.keys")

_STORE_PREFIX = "clientkeys:key:"
_VERSION = "clientkeys:version"
_DIGEST_PREFIX = "clientkeys:digest:"  # digest → the name holding it: one key value, one name, across replicas
GENERATED_PREFIX = "sk-cb-"


class KeyConflict(Exception):
    """An admin request that cannot be done as asked (a name or key already taken, a key not revocable)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class FileStamp:
    mtime_ns: int
    size: int
    inode: int


def _stamp(path: Path) -> FileStamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileStamp(st.st_mtime_ns, st.st_size, st.st_ino)


def env_key_names(count: int) -> list[str]:
    return ["VALID_API_KEY" if i == 0 else f"VALID_API_KEY-{i + 1}" for i in range(count)]


class ClientKeys:
    """The key ring (env + file + API), its refresh loop, and admission and usage for each request."""

    def __init__(self, store: StateStore, *, env_keys: Iterable[str] = (), file: Path | None = None,
                 reserved: Iterable[str] = (), poll_interval: float = 0.5, flush_interval: float = 1.0) -> None:
        self.store = store
        self.file = file
        self.poll_interval = poll_interval
        self.flush_interval = flush_interval
        self.limiter = Limiter(store)
        self.usage = UsageRecorder(store)
        self._reserved = {digest(k) for k in reserved}  # the admin keys: never a client key
        values = list(env_keys)
        self._env = [ClientKey(name, digest(value), KeyLimits(), "env", hint=mask(value))
                     for name, value in zip(env_key_names(len(values)), values, strict=True)]
        self._file_keys: list[ClientKey] = []
        self._api_keys: list[ClientKey] = []
        self._stamp: FileStamp | None = None
        self._version: Any = None
        self._by_digest: dict[str, ClientKey] = {}
        self._by_name: dict[str, ClientKey] = {}
        self.last_reload_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_gone: list[Callable[[set[str]], None]] = []
        if file is not None:
            self._stamp = _stamp(file)
            self._file_keys = self._checked(read_keys_file(file))
        self._rebuild()

    # -- lookup (the hot path) --------------------------------------------------------------------------

    def find(self, presented: bytes | None) -> ClientKey | None:
        if not presented:
            return None
        wanted = hashlib.sha256(presented).hexdigest()
        key = self._by_digest.get(wanted)
        return key if key is not None and hmac.compare_digest(key.digest, wanted) else None

    def holds(self, key: ClientKey) -> bool:
        """The key is still accepted (not revoked, nor removed from the file, since it was found)."""
        return key.digest in self._by_digest

    def on_gone(self, callback: Callable[[set[str]], None]) -> None:
        """`callback(digests)` is called with the keys that stop being accepted, whenever some do."""
        self._on_gone.append(callback)

    def named(self, name: str) -> ClientKey | None:
        return self._by_name.get(name)

    @property
    def keys(self) -> list[ClientKey]:
        return list(self._by_name.values())

    async def admit(self, key: ClientKey, model: str) -> Admission:
        return await self.limiter.admit(key, model)


    # -- the sources ----------------------------------------------------------------------------------

    def _checked(self, keys: list[ClientKey]) -> list[ClientKey]:
        """File keys that clash with the env keys or an admin key make the whole file invalid."""
        env_names = {k.name for k in self._env}
        env_digests = {k.digest for k in self._env}
        for key in keys:
            if key.name in env_names:
                raise KeysFileError(f"CLIENT_KEYS_FILE: the name {key.name!r} is reserved for VALID_API_KEY")
            if key.digest in self._reserved:
                raise KeysFileError(f"CLIENT_KEYS_FILE: the key named {key.name!r} is the admin key (ADMIN_API_KEY); "
                                    "a client could administer the gateway")
            if key.digest in env_digests:
                raise KeysFileError(f"CLIENT_KEYS_FILE: the key named {key.name!r} is also VALID_API_KEY")
        return keys

    def _rebuild(self) -> None:
        """One lookup table; env keys first, then the file, then API keys whose name and key are still free."""
        by_digest: dict[str, ClientKey] = {}
        by_name: dict[str, ClientKey] = {}
        for key in (*self._env, *self._file_keys, *self._api_keys):
            if key.name in by_name or key.digest in by_digest:
                if key.source == "api":
                    log.warning("client key %r added through the admin API is shadowed by CLIENT_KEYS_FILE "
                                "(same name or key); the file's entry is used", key.name)
                continue
            by_digest[key.digest] = key
            by_name[key.name] = key
        gone = self._by_digest.keys() - by_digest.keys()
        self._by_digest, self._by_name = by_digest, by_name
        for callback in self._on_gone if gone else ():
            callback(gone)

    def reload_file(self) -> bool:
        """Re-read CLIENT_KEYS_FILE if it changed; a broken edit keeps the last good set (and is logged)."""
        if self.file is None:
            return False
        stamp = _stamp(self.file)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            keys = self._checked(read_keys_file(self.file))
        except KeysFileError as exc:
            self.last_reload_error = str(exc)
            log.error("%s; keeping the %d key(s) read before", exc, len(self._file_keys))
            return False
        self.last_reload_error = None
        self._file_keys = keys
        self._rebuild()
        log.info("CLIENT_KEYS_FILE reloaded: %d key(s)", len(keys))
        return True

    async def reload_store(self, *, force: bool = False) -> bool:
        """Re-read the API keys if the store's version moved (or `force`)."""
        version = await self.store.get(_VERSION)
        if version == self._version and not force:
            return False
        keys = []
        for name in await self.store.keys(_STORE_PREFIX):
            record = await self.store.get(name)
            key = _from_record(record)
            if key is not None:
                keys.append(key)
        self._version = version
        self._api_keys = keys
        self._rebuild()
        return True

    # -- admin operations -----------------------------------------------------------------------------

    async def add(self, entry: dict[str, Any]) -> tuple[ClientKey, str | None]:
        """Add a key through the API; the key itself (given or generated) is returned this once."""
        if "key_sha256" in entry:
            raise KeysFileError("key_sha256: not accepted here; give `key`, or none to have one generated")
        given = entry.get("key")
        value = GENERATED_PREFIX + secrets.token_urlsafe(32) if given is None else given
        try:
            parsed = KeyEntry.model_validate({**entry, "key": value})
        except ValidationError as exc:
            raise KeysFileError(describe_errors(exc)) from None
        assert parsed.key is not None
        await self.reload_store(force=True)
        key_digest = parsed.digest
        if parsed.name in self._by_name:
            raise KeyConflict(f"A client key named {parsed.name!r} exists already")
        if key_digest in self._by_digest or key_digest in self._reserved:
            raise KeyConflict("That key is already in use; choose another (or leave `key` out to have one generated)")
        limits = KeyLimits(**parsed.model_dump(include=set(KeyLimits.model_fields)))
        key = ClientKey(parsed.name, key_digest, limits, "api", hint=mask(value), created_at=time.time())
        if not await self._claim_digest(key):  # another request (or replica) took this key value meanwhile
            raise KeyConflict("That key is already in use; choose another (or leave `key` out to have one generated)")
        if not await self.store.compare_and_set(_STORE_PREFIX + quote(key.name, safe=""), None, _to_record(key)):
            await self._free_digest(key_digest, key.name)
            raise KeyConflict(f"A client key named {parsed.name!r} exists already")
        register_secret(value)
        await self.store.incr(_VERSION)
        await self.reload_store(force=True)
        return key, value

    async def _claim_digest(self, key: ClientKey) -> bool:
        """Reserve the key's value for its name, atomically: two simultaneous adds of one value cannot both
        succeed. A reservation whose name holds no key with that value (a crash between the two writes,
        or a key revoked by an older version) is taken over."""
        slot = _DIGEST_PREFIX + key.digest
        if await self.store.compare_and_set(slot, None, key.name):
            return True
        holder = await self.store.get(slot)
        if holder is None:
            return await self.store.compare_and_set(slot, None, key.name)
        record = await self.store.get(_STORE_PREFIX + quote(str(holder), safe=""))
        if isinstance(record, dict) and record.get("key_sha256") == key.digest:
            return False
        return await self.store.compare_and_set(slot, holder, key.name)

    async def _free_digest(self, digest: str, name: str) -> None:
        if await self.store.get(_DIGEST_PREFIX + digest) == name:
            await self.store.delete(_DIGEST_PREFIX + digest)

    async def revoke(self, name: str) -> ClientKey:
        await self.reload_store(force=True)
        key = self._by_name.get(name)
        if key is None:
            raise KeyConflict(f"No client key named {name!r}", 404)
        if key.source == "env":
            raise KeyConflict(f"{name!r} is VALID_API_KEY: change the variable to revoke it")
        if key.source == "file":
            raise KeyConflict(f"{name!r} comes from CLIENT_KEYS_FILE: remove it from the file to revoke it "
                              "(the file is re-read within a second)")
        await self._free_digest(key.digest, name)  # first: an add of the same value may then take it at once
        await self.store.delete(_STORE_PREFIX + quote(name, safe=""))
        await self.store.incr(_VERSION)
        await self.reload_store(force=True)
        return key

    # -- lifecycle ------------------------------------------------------------------------------------

    async def astart(self) -> None:
        await self.reload_store(force=True)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="client-keys")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.usage.flush()

    async def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self.reload_file()
                await self.reload_store()
                if time.monotonic() - last_flush >= self.flush_interval:
                    last_flush = time.monotonic()
                    await self.usage.flush()
            except Exception as exc:  # the loop must outlive one bad round
                log.error("client keys: could not refresh: %s", exc)


def _to_record(key: ClientKey) -> dict[str, Any]:
    return {"name": key.name, "key_sha256": key.digest, "hint": key.hint, "created_at": key.created_at,
            **key.limits.model_dump(mode="json", exclude_none=True)}


def _from_record(record: Any) -> ClientKey | None:
    if not isinstance(record, dict):
        return None
    try:
        limits = KeyLimits.model_validate({k: v for k, v in record.items() if k in KeyLimits.model_fields})
        return ClientKey(str(record["name"]), str(record["key_sha256"]), limits, "api",
                         hint=str(record.get("hint", "")), created_at=record.get("created_at"))
    except Exception as exc:  # a record written by a newer version, or damaged: skipped, not fatal
        log.error("client keys: skipping a stored key record: %s", type(exc).__name__)
        return None
