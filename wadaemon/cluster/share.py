"""Fair share: which instance should run which account (pure: no trio, no store).

**Rendezvous hashing.** Each account goes to the live instance with the highest
``hash(account, instance)``. Every instance computes the same answer from the same set of live
instances, each gets about ``1/n`` of the accounts, and when an instance joins or leaves only
the accounts that move *to* or *from* it change hands (about ``1/n``, not a reshuffle).

**No flapping.** The answer depends only on *which* instances are alive, never on heartbeat
timing. An instance is alive while its heartbeat document keeps changing (seen on the
reader's own monotonic clock, ``Membership``), and dead only after a whole lease without a
change; a late heartbeat or two changes nothing. A newly seen instance is first *unsettled*:
it may take free accounts, but nobody hands it accounts until it has stayed alive for
``settle_ms`` — an instance that starts and dies at once causes no hand-over.

**Hand-over, not expiry.** A holder whose account now prefers another (settled) instance
stops the account and *releases* the lease; the preferred instance sees it free on its next
tick and takes it. A free account is taken at once by its preferred instance, and by anyone
after ``orphan_grace_ms`` (the preferred one may be pinned elsewhere or stuck). An expired
lease's holder is never preferred for it: it failed to renew. A lease still naming this
instance that it does not hold is from before a restart under the same ``INSTANCE_ID``: it
takes it back at once (a new process, so the old socket is gone).

``WADAEMON_ACCOUNTS`` pins an instance: it takes only those accounts (its heartbeat says so,
and the others leave the rest to instances that accept them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from wadaemon.cluster.timing import LeaseTiming
from wadaemon.domain import InstanceDoc, Lease
from wadaemon.store.leases import is_live


class Peer(msgspec.Struct, frozen=True):
    """An instance as this one sees it."""

    instance_id: str
    settled: bool
    accepting: bool = True
    pinned: frozenset[str] = frozenset()

    def accepts(self, account_id: str) -> bool:
        return self.accepting and (not self.pinned or account_id in self.pinned)


class Plan(msgspec.Struct, frozen=True):
    take: list[str]
    hand_over: list[str]


def _weight(account_id: str, instance_id: str) -> bytes:
    return hashlib.blake2b(f"{account_id}\x00{instance_id}".encode(), digest_size=8).digest()


def preferred(account_id: str, candidates: Iterable[Peer]) -> str | None:
    """The rendezvous choice among the candidates that accept the account (None: nobody)."""
    best: tuple[bytes, str] | None = None
    for peer in candidates:
        if peer.accepts(account_id):
            key = (_weight(account_id, peer.instance_id), peer.instance_id)
            if best is None or key > best:
                best = key
    return best[1] if best is not None else None


def plan(*, me: Peer, peers: Sequence[Peer], accounts: Iterable[str], leases: Mapping[str, Lease],
         held: Iterable[str], free_for_ms: Mapping[str, float], wall_ms: int, timing: LeaseTiming) -> Plan:
    """What ``me`` does this tick: accounts to take, accounts to hand over. ``peers`` are the
    *other* live instances; ``free_for_ms`` how long each free account has been seen free."""
    mine = set(held)
    settled = [me, *(peer for peer in peers if peer.settled)]
    take: list[str] = []
    hand_over: list[str] = []
    for account_id in sorted(set(accounts) | mine):
        if account_id in mine:
            choice = preferred(account_id, settled)
            if me.accepting and choice is not None and choice != me.instance_id:
                hand_over.append(account_id)
            continue
        lease = leases.get(account_id)
        if not me.accepts(account_id):
            continue
        if lease is not None and lease.owner_id == me.instance_id:
            take.append(account_id)  # ours from before a restart under the same instance id
            continue
        if is_live(lease, wall_ms):
            continue
        failed = lease.owner_id if lease is not None else None
        candidates = [me, *(peer for peer in peers if peer.instance_id != failed)]
        if (preferred(account_id, candidates) == me.instance_id
                or free_for_ms.get(account_id, 0.0) >= timing.orphan_grace_ms):
            take.append(account_id)
    return Plan(take=take, hand_over=hand_over)


class _Seen(msgspec.Struct):
    heartbeat_at_ms: int
    changed_ms: float  # my monotonic ms when that heartbeat value was first seen
    alive_since_ms: float


class Membership:
    """Who is alive, judged on this instance's monotonic clock (no clock comparison across
    hosts except once, to age a heartbeat seen for the first time)."""

    def __init__(self, me: str, timing: LeaseTiming) -> None:
        self.me = me
        self.timing = timing
        self._seen: dict[str, _Seen] = {}

    def observe(self, docs: Sequence[InstanceDoc], *, now_ms: float, wall_ms: int) -> list[Peer]:
        """The other live instances, given every heartbeat document read now."""
        present = {doc.instance_id for doc in docs}
        for gone in set(self._seen) - present:
            del self._seen[gone]  # deleted heartbeat: stopped gracefully
        peers: list[Peer] = []
        for doc in docs:
            if doc.instance_id == self.me:
                continue
            seen = self._seen.get(doc.instance_id)
            if seen is None:
                age = max(0, wall_ms - doc.heartbeat_at_ms)
                running = max(0, wall_ms - doc.started_at_ms)
                seen = self._seen[doc.instance_id] = _Seen(
                    doc.heartbeat_at_ms, now_ms - age,
                    now_ms - (running if running >= self.timing.settle_ms else 0))
            elif seen.heartbeat_at_ms != doc.heartbeat_at_ms:
                if now_ms - seen.changed_ms > self.timing.lease_ms:
                    seen.alive_since_ms = now_ms  # back from the dead: settle again
                seen.heartbeat_at_ms, seen.changed_ms = doc.heartbeat_at_ms, now_ms
            if now_ms - seen.changed_ms > self.timing.lease_ms:
                continue
            peers.append(Peer(doc.instance_id, settled=now_ms - seen.alive_since_ms >= self.timing.settle_ms,
                              accepting=doc.accepting, pinned=frozenset(doc.pinned_accounts)))
        return peers


class FreeSince:
    """When each account was first seen free (absent, released or expired) on my clock."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def update(self, accounts: Iterable[str], leases: Mapping[str, Lease], *, now_ms: float,
               wall_ms: int) -> dict[str, float]:
        free = {a for a in accounts if not is_live(leases.get(a), wall_ms)}
        self._since = {a: self._since.get(a, now_ms) for a in free}
        return {a: now_ms - since for a, since in self._since.items()}
