"""One provider's pool shared by N gateway replicas through the state store (Redis).

Only built when `store.shared` is True; a single process with the embedded store never creates
one, so its hot path is unchanged. What it shares:

- Health: every change of a credential's verdict (failures, cooldown, disabled and why, last
  error) is written to `pool-shared:<provider>:health:<id>` and published on `pool:<provider>`
  by one background writer; every replica applies the others' changes as they arrive, and
  re-reads them all at start and after a RESYNC (messages may have been missed). A write
  carries only the fields that changed, each with a version from one store counter; per field
  the newest version wins (when applied and when stored), so two replicas changing one
  credential at once (an admin's disable here, a failure counted there) both hold. Versions
  never go backwards: a counter below the highest version a replica has seen (a Redis
  restarted empty) is lifted past it on that replica's next write and on every re-read.
- Round robin: the position is a store counter, so N replicas spread over the credentials as
  one process would.
- Stream caps: a lease on a capped credential also holds one of `cap` store slots (holder:
  replica id + lease number) for `slot_ttl` seconds, renewed by one task per pool while the
  lease is open; a refused claim means busy elsewhere (another credential is tried, or the
  caller waits for a release, which is published). A replica killed with -9 stops renewing, so
  its slots expire within `slot_ttl`.
- Locks with fencing tokens (`locked`) for renewals and whole-pool refreshes, and the latest
  renewal of each credential (`put_renewal`/`get_renewal`) so others take it over instead of
  spending a refresh token twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from chatbridge.core.errors import PoolBusy, PoolExhausted
from chatbridge.pool.pool import CredentialHealth, CredentialPool, Lease
from chatbridge.state import RESYNC, StateStore

log = logging.getLogger("chatbridge.pool.shared")

# The health fields replicas share; `requests_served` stays each replica's own count.
SHARED_FIELDS = ("failures", "disabled", "disabled_reason", "cooldown_until", "last_error")
SLOT_POLL = 1.0  # a caller waiting for a slot held elsewhere looks again at least this often (expiries)
RECONNECT_PAUSE = 1.0  # after the subscription broke, before subscribing again

MessageHook = Callable[[dict[str, Any]], None]


def replica_id() -> str:
    """A name for this process, unique among replicas (host, pid and a random suffix)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


async def stop_tasks(tasks: list[asyncio.Task[None]], grace: float = 2.0) -> None:
    """Cancel `tasks` and wait for them, at most `grace` seconds: a cancellation swallowed inside a
    store call (redis-py can lose one) must not hang a shutdown; the loops also check a closed flag."""
    for _ in range(2):
        pending = [task for task in tasks if not task.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=grace / 2)
    stuck = [task.get_name() for task in tasks if not task.done()]
    if stuck:
        log.warning("background tasks did not stop within %g s: %s", grace, ", ".join(stuck))


def shared_record(entry: CredentialHealth) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in SHARED_FIELDS}


class PoolSharing:
    """Keeps one pool in step with the same provider's pools on other replicas (see the module doc)."""

    def __init__(self, pool: CredentialPool, store: StateStore, *, replica: str, slot_ttl: float = 30.0) -> None:
        self.pool = pool
        self.store = store
        self.replica = replica
        self.slot_ttl = slot_ttl
        self.channel = f"pool:{pool.provider}"
        self.prefix = f"pool-shared:{pool.provider}:"
        self.hooks: list[MessageHook] = []  # other messages (renewals, reloads), for the lifecycle
        self._known: dict[str, dict[str, Any]] = {}  # credential id → shared fields as last written or read
        self._dirty: dict[str, set[str]] = {}  # credential id → fields changed here, not yet written
        self._versions: dict[str, dict[str, int]] = {}  # credential id → field → version applied or written last
        self._highest = 0  # the highest version seen anywhere: the store's counter must never hand out less
        self._releases: list[tuple[str, str, str]] = []  # (slot key, holder, credential id) to give back
        self._held: dict[str, tuple[str, int]] = {}  # holder → (slot key, cap): slots of open leases
        self._wake = asyncio.Event()
        self._released = asyncio.Event()  # set (and replaced) whenever a slot frees on any replica
        self._renewed: dict[str, asyncio.Event] = {}
        self._seq = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._closed = False

    # -- start and stop ---------------------------------------------------------------------------

    async def astart(self) -> None:
        """Take over the health the other replicas hold, then follow their changes."""
        await self.resync()
        for entry in self.pool.entries:
            self._known.setdefault(entry.credential.id, shared_record(entry))
        loop = asyncio.get_running_loop()
        name = self.pool.provider
        self._tasks = [loop.create_task(self._listen(), name=f"{name}-pool-listen"),
                       loop.create_task(self._write_loop(), name=f"{name}-pool-share"),
                       loop.create_task(self._renew_loop(), name=f"{name}-slot-renew")]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._subscribed.wait()
        self.pool.shared = self
        self.pool.acquire = self.acquire  # type: ignore[method-assign]  # in the class's place, on this pool only

    async def aclose(self) -> None:
        """Write what is pending, give back every slot this replica holds, stop following."""
        self.pool.shared = None
        self.pool.__dict__.pop("acquire", None)  # the pool's own again
        self._closed = True
        for holder, (key, _) in list(self._held.items()):
            self._releases.append((key, holder, ""))
        self._held.clear()
        with contextlib.suppress(Exception):
            await self._drain()
        self._wake.set()
        await stop_tasks(self._tasks)
        self._tasks.clear()

    # -- health -----------------------------------------------------------------------------------

    def changed(self, entry: CredentialHealth) -> None:
        """The pool's listener: queue the credential's health for the store if its verdict changed."""
        record = shared_record(entry)
        credential_id = entry.credential.id
        known = self._known.get(credential_id)
        if known != record:
            self._known[credential_id] = record
            fields = {name for name in SHARED_FIELDS if known is None or known.get(name) != record[name]}
            self._dirty.setdefault(credential_id, set()).update(fields)
            self._wake.set()

    async def resync(self) -> int:
        """Re-read every credential's shared health (then lift the version counter over every
        version this replica knows, in case the store lost it); returns how many records were applied."""
        applied = 0
        start = len(self.prefix + "health:")
        for key in await self.store.keys(self.prefix + "health:"):
            record = await self.store.get(key)
            if isinstance(record, dict):
                self._apply(key[start:], record)
                applied += 1
        if self._highest:
            await self._next_version(0)
        return applied

    async def _next_version(self, step: int = 1) -> int:
        """The store counter moved by `step` and, if that leaves it at or below a version this replica
        has seen (a Redis restarted empty counts from 0 again), lifted past it by the difference:
        versions never go backwards, so a change made after the restart wins over older ones."""
        key = self.prefix + "version"
        version = await self.store.incr(key, step)
        floor = self._highest + step  # step 0 (a re-read): at least the highest; 1 (a write): above it
        if version < floor:
            version = await self.store.incr(key, floor - version)
        self._highest = max(self._highest, version)
        return version

    def _seen(self, versions: dict[str, Any]) -> None:
        for version in versions.values():
            if isinstance(version, int) and not isinstance(version, bool) and version > self._highest:
                self._highest = version

    def _apply(self, credential_id: str, record: dict[str, Any]) -> None:
        """Take over the fields of `record` that are newer than ours and not changed here meanwhile
        (a field changed here is written next, with a newer version, so every replica ends with it)."""
        versions = record.get("versions")
        if not isinstance(versions, dict):
            return
        self._seen(versions)
        mine = self._versions.setdefault(credential_id, {})
        pending = self._dirty.get(credential_id, set())
        newer = [name for name in SHARED_FIELDS if name in record and name not in pending
                 and isinstance(versions.get(name), int) and versions[name] > mine.get(name, 0)]
        if not newer:
            return
        entry = self.pool.find(credential_id)
        merged = dict(self._known.get(credential_id) or (shared_record(entry) if entry is not None else {}))
        for name in newer:
            merged[name] = record[name]
            mine[name] = versions[name]
        self._known[credential_id] = merged
        self.pool.apply_shared(credential_id, merged)

    # -- messages ---------------------------------------------------------------------------------

    async def publish(self, kind: str, **fields: Any) -> None:
        await self.store.publish(self.channel, {"from": self.replica, "kind": kind, **fields})

    async def _listen(self) -> None:
        while not self._closed:
            try:
                async with self.store.subscribe(self.channel) as subscription:
                    self._subscribed.set()
                    async for _, message in subscription:
                        if message is RESYNC:
                            await self.resync()
                            self._pulse()
                            self._call_hooks({"kind": "resync"})
                        elif isinstance(message, dict) and message.get("from") != self.replica:
                            self._handle(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store said it would not raise; keep following regardless
                log.warning("%s pool: following other replicas failed (%s); again in %g s",
                            self.pool.provider, type(exc).__name__, RECONNECT_PAUSE)
            self._subscribed.set()
            await asyncio.sleep(RECONNECT_PAUSE)
            with contextlib.suppress(Exception):
                await self.resync()

    def _handle(self, message: dict[str, Any]) -> None:
        kind, credential_id = message.get("kind"), message.get("id")
        if kind == "health" and isinstance(credential_id, str) and isinstance(message.get("record"), dict):
            self._apply(credential_id, message["record"])
        elif kind == "slot" and isinstance(credential_id, str):
            entry = self.pool.find(credential_id)
            if entry is not None:
                self.pool.refill(entry)
            self._pulse()
        else:
            if kind == "renewed" and isinstance(credential_id, str):
                self._renewal_seen(credential_id)
            self._call_hooks(message)

    def _call_hooks(self, message: dict[str, Any]) -> None:
        for hook in self.hooks:
            try:
                hook(message)
            except Exception:  # one broken hook must not stop the replica following the others
                log.exception("%s pool: handling a message from another replica failed", self.pool.provider)

    def _pulse(self) -> None:
        released, self._released = self._released, asyncio.Event()
        released.set()

    # -- the writer -------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s pool: sharing state with other replicas failed: %s", self.pool.provider, exc)

    async def _drain(self) -> None:
        while self._dirty or self._releases:
            releases, self._releases = self._releases, []
            for key, holder, credential_id in releases:
                await self.store.release_slot(key, holder)
                if credential_id:
                    await self.publish("slot", id=credential_id)
            dirty, self._dirty = self._dirty, {}
            for credential_id, fields in dirty.items():
                record = self._known.get(credential_id)
                if record is None or not fields:
                    continue
                version = await self._next_version()
                delta: dict[str, Any] = {name: record[name] for name in fields}
                delta["versions"] = {name: version for name in fields}
                self._versions.setdefault(credential_id, {}).update(delta["versions"])
                await self._store_health(credential_id, delta)
                await self.publish("health", id=credential_id, record=delta)

    async def _store_health(self, credential_id: str, delta: dict[str, Any]) -> None:
        """Merge `delta` into the stored record, field by field where it is newer (writes may cross)."""
        key = f"{self.prefix}health:{credential_id}"
        for _ in range(8):
            current = await self.store.get(key)
            merged = dict(current) if isinstance(current, dict) else {}
            versions = dict(merged.get("versions") or {})
            for name, version in delta["versions"].items():
                if not isinstance(versions.get(name), int) or versions[name] < version:
                    merged[name], versions[name] = delta[name], version
            merged["versions"] = versions
            if merged == current or await self.store.compare_and_set(key, current, merged):
                return

    # -- stream slots -----------------------------------------------------------------------------

    async def acquire(self, exclude: frozenset[str] = frozenset(), prefer: str | None = None, timeout: float = 0.0) -> Lease:
        """A lease whose slot is claimed in the store: busy everywhere means wait (up to `timeout`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        elsewhere: set[str] = set()  # free here, but at their cap across replicas
        while True:
            released = self._released
            if len(self.pool) > 1:  # one round trip, only where there is a choice to spread
                self.pool.set_cursor(await self.store.incr(self.prefix + "cursor") - 1)
            try:
                lease = await self.pool.acquire_local(exclude | elsewhere, prefer,
                                                      max(0.0, deadline - loop.time()))
            except PoolExhausted:
                if not elsewhere:
                    raise
            else:
                if await self._claim(lease):
                    return lease
                elsewhere.add(lease.credential.id)
                lease.release()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PoolBusy(self.pool.provider, f"{self.pool.provider}: all {len(elsewhere)} usable credential(s) "
                               f"are at their stream cap on other replicas; none freed up within {timeout:g} s",
                               retry_after=1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, SLOT_POLL)):
                    await released.wait()
            elsewhere.clear()

    async def _claim(self, lease: Lease) -> bool:
        cap = self.pool.stream_cap(lease.health)
        if cap is None:
            return True
        key = f"{self.prefix}slots:{lease.credential.id}"
        holder = f"{self.replica}:{next(self._seq)}"
        try:
            claimed = await self.store.claim_slot(key, holder, cap, self.slot_ttl)
        except BaseException:
            lease.release()
            raise
        if claimed:
            lease.slot = holder
            self._held[holder] = (key, cap)
        return claimed

    def settled(self, lease: Lease) -> None:
        """A lease holding a slot settled: give the slot back (in the background) and say so."""
        assert lease.slot is not None
        held = self._held.pop(lease.slot, None)
        if held is not None:
            self._releases.append((held[0], lease.slot, lease.credential.id))
            self._wake.set()

    async def _renew_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.slot_ttl / 3)
            for holder, (key, cap) in list(self._held.items()):
                try:
                    if not await self.store.renew_slot(key, holder, self.slot_ttl) and holder in self._held:
                        await self.store.claim_slot(key, holder, cap, self.slot_ttl)  # it lapsed (store away): again
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("%s pool: renewing a stream slot failed: %s", self.pool.provider, exc)

    # -- locks and renewals -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def locked(self, name: str, ttl: float) -> AsyncIterator[int | None]:
        """The store lock `name` for as long as the block runs (extended every ttl/3): its fencing
        token, or None when another replica holds it (the block then must not do the work)."""
        lock = f"{self.prefix}lock:{name}"
        fence = await self.store.acquire_lock(lock, ttl)
        if fence is None:
            yield None
            return

        async def extend() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                if not await self.store.extend_lock(lock, fence, ttl):
                    log.warning("%s pool: lost the lock %s while working under it", self.pool.provider, name)
                    return

        keeper = asyncio.get_running_loop().create_task(extend(), name=f"{self.pool.provider}-lock-keeper")
        try:
            yield fence
        finally:
            keeper.cancel()
            with contextlib.suppress(BaseException):
                await keeper
            await self.store.release_lock(lock, fence)

    async def get_renewal(self, credential_id: str) -> dict[str, Any] | None:
        """The latest renewal of a credential any replica stored: {"fence", "record"}."""
        value = await self.store.get(f"{self.prefix}renewal:{credential_id}")
        return value if isinstance(value, dict) and isinstance(value.get("record"), dict) else None

    async def put_renewal(self, credential_id: str, fence: int, record: dict[str, Any]) -> bool:
        """Store a renewal made under the lock's `fence` and tell the others; refused (False) when a
        holder with a newer fence stored one already (this holder's lock had expired)."""
        key = f"{self.prefix}renewal:{credential_id}"
        for _ in range(5):
            current = await self.store.get(key)
            if isinstance(current, dict) and isinstance(current.get("fence"), int) and current["fence"] > fence:
                return False
            if await self.store.compare_and_set(key, current, {"fence": fence, "record": record, "by": self.replica}):
                break
        else:
            return False
        await self.publish("renewed", id=credential_id, fence=fence)
        return True

    async def put_file(self, data: bytes) -> None:
        """A tokens file's new contents, for the replicas whose copy differs; they are told at once."""
        digest = hashlib.sha256(data).hexdigest()
        current = await self.store.get(self.prefix + "tokens-file")
        if isinstance(current, dict) and current.get("sha256") == digest:
            return  # the store holds it already (another replica published it, or a shared volume)
        await self.store.set(self.prefix + "tokens-file", {"text": base64.b64encode(data).decode(), "sha256": digest})
        await self.publish("tokens-file", sha256=digest)

    async def get_file(self) -> bytes | None:
        value = await self.store.get(self.prefix + "tokens-file")
        if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            return None
        try:
            return base64.b64decode(value["text"], validate=True)
        except ValueError:
            return None

    async def wait_renewal(self, credential_id: str, timeout: float) -> None:
        """Until another replica announces a renewal of the credential, or `timeout` seconds."""
        event = self._renewed.setdefault(credential_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()

    def _renewal_seen(self, credential_id: str) -> None:
        event = self._renewed.pop(credential_id, None)
        if event is not None:
            event.set()
