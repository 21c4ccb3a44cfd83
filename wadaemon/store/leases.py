"""Lease documents and the rules that decide every lease operation, once for both adapters.

Three kinds of lease share one pattern (docs/data-model.md, Locks)::

    account       whatsapp_account_leases/{accountId}   ownerId, expiresAtMs, acquiredAt, epoch
    backfill      whatsapp_backfill_locks/{accountId}   ownerId, expiresAtMs, startedAt
                  (mirrored to accounts/{accountId}.autoBackfillLease*, in the same commit)
    recent_sync   accounts/{accountId}                  recentSyncLeaseHolder/Until/AcquiredAt

An adapter only reads the stored fields, calls the pure ``decide_*`` function here, and writes
what it returns atomically (a compare-and-swap on the document's update time in Firestore,
one ``BEGIN IMMEDIATE`` transaction in SQLite). Both adapters used to carry their own copy of
these rules, and the copies had begun to drift (one parsed string timestamps, the other did
not); keeping the rules here makes them one.

**The fencing epoch** (account leases): a counter that grows by one every time the lease
passes to a *new* holder. Renewals keep it; a renewal or release that names another epoch is
refused even when the owner id matches, so a process that was frozen past its lease and
resumed under the same instance id cannot mistake a successor's lease for its own. Because the
counter must survive a release, releasing an account lease keeps the document as a tombstone
(``ownerId: ""``, ``expiresAtMs: 0``, the epoch) instead of deleting it; the other kinds are
deleted on release as before. Operators (and the chaos test) read ``epoch -> ownerId`` pairs:
no epoch is ever held by two owners.

**Time**: ``expiresAtMs`` is the holder's wall clock plus the lease duration; another instance
compares it with its own wall clock. This assumes the hosts' clocks agree within the margin
between the lease duration and the holder's renew deadline (``wadaemon.cluster.timing``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from msgspec.structs import replace

from wadaemon.domain import Lease, datetime_to_ms, ms_to_datetime
from wadaemon.store.contract import LeaseKind, StoreError

ACCOUNT_LEASES = "whatsapp_account_leases"
BACKFILL_LOCKS = "whatsapp_backfill_locks"
INSTANCES = "whatsapp_instances"
EPOCH_FIELD = "epoch"


class LeaseLayout(msgspec.Struct, frozen=True):
    """Where a kind of lease lives and what its fields are called."""

    collection: str  # "accounts" for the recent-sync lease (fields on the account document)
    holder: str
    expiry: str
    acquired: str
    expiry_is_timestamp: bool  # recent-sync writes a timestamp, the lock documents epoch ms


LAYOUTS: dict[str, LeaseLayout] = {
    "account": LeaseLayout(ACCOUNT_LEASES, "ownerId", "expiresAtMs", "acquiredAt", False),
    "backfill": LeaseLayout(BACKFILL_LOCKS, "ownerId", "expiresAtMs", "startedAt", False),
    "recent_sync": LeaseLayout("accounts", "recentSyncLeaseHolder", "recentSyncLeaseUntil",
                               "recentSyncLeaseAcquiredAt", True),
}
#: The backfill lock as mirrored on ``accounts/*`` for operators: holder, until, acquired.
BACKFILL_MIRROR = ("autoBackfillLeaseHolder", "autoBackfillLeaseUntil", "autoBackfillLeaseAcquiredAt")

Action = Literal["write", "release", "none"]


class LeaseDecision(msgspec.Struct, frozen=True):
    """What to do with a lease document: ``write`` ``lease``; ``release`` it (tombstone or
    delete, see ``release_fields``); or ``none`` (leave it). ``lease`` is also the answer the
    caller gets (None: refused)."""

    action: Action
    lease: Lease | None


def lease_kind(kind: str) -> LeaseKind:
    if kind == "account":
        return "account"
    if kind == "backfill":
        return "backfill"
    if kind == "recent_sync":
        return "recent_sync"
    raise StoreError(f"unknown lease kind {kind!r}")


def _ms_of(value: Any) -> int | None:
    """A stored lease time: epoch ms, a datetime (Firestore) or an ISO string (SQLite's JSON)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return datetime_to_ms(value)
    if isinstance(value, str):
        return datetime_to_ms(msgspec.convert(value, datetime))
    return None


def stored_epoch(fields: dict[str, Any] | None) -> int:
    value = (fields or {}).get(EPOCH_FIELD)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def lease_of(kind: LeaseKind, key: str, fields: dict[str, Any] | None) -> Lease | None:
    """The lease held in a stored document; None when absent or released."""
    layout = LAYOUTS[kind]
    data = fields or {}
    owner = data.get(layout.holder)
    expires_ms = _ms_of(data.get(layout.expiry))
    if not owner or expires_ms is None:
        return None
    acquired_ms = _ms_of(data.get(layout.acquired))
    return Lease(kind=kind, key=key, owner_id=str(owner), expires_at_ms=expires_ms,
                 acquired_at_ms=expires_ms if acquired_ms is None else acquired_ms,
                 epoch=stored_epoch(data) if kind == "account" else 0)


def lease_fields(lease: Lease) -> dict[str, Any]:
    """The stored fields of a held lease (datetimes stay datetimes; adapters encode them)."""
    layout = LAYOUTS[lease.kind]
    expiry: Any = ms_to_datetime(lease.expires_at_ms) if layout.expiry_is_timestamp else lease.expires_at_ms
    fields = {layout.holder: lease.owner_id, layout.expiry: expiry,
              layout.acquired: ms_to_datetime(lease.acquired_at_ms)}
    if lease.kind == "account":
        fields[EPOCH_FIELD] = lease.epoch
    return fields


def release_fields(lease: Lease) -> dict[str, Any] | None:
    """What a released lease leaves: the account tombstone keeping the epoch, or None for the
    kinds whose document (or fields) are deleted."""
    if lease.kind != "account":
        return None
    layout = LAYOUTS["account"]
    return {layout.holder: "", layout.expiry: 0, layout.acquired: ms_to_datetime(lease.acquired_at_ms),
            EPOCH_FIELD: lease.epoch}


def backfill_mirror(lease: Lease | None) -> dict[str, Any]:
    """The ``accounts/*`` mirror of a backfill lock; None values mean "delete the field"."""
    holder, until, acquired = BACKFILL_MIRROR
    if lease is None:
        return dict.fromkeys(BACKFILL_MIRROR)
    return {holder: lease.owner_id, until: ms_to_datetime(lease.expires_at_ms),
            acquired: ms_to_datetime(lease.acquired_at_ms)}


def decide_acquire(current: Lease | None, last_epoch: int, *, kind: LeaseKind, key: str, owner_id: str,
                   ttl_ms: int, now_ms: int) -> LeaseDecision:
    """Take the lease when absent, released or expired (a new holder: the epoch grows); extend
    it when it is still ours (same epoch, same acquisition time); refuse otherwise."""
    if current is not None and current.expires_at_ms > now_ms:
        if current.owner_id != owner_id:
            return LeaseDecision("none", None)
        return LeaseDecision("write", replace(current, expires_at_ms=now_ms + ttl_ms))
    epoch = max(last_epoch, current.epoch if current is not None else 0) + 1 if kind == "account" else 0
    return LeaseDecision("write", Lease(kind=kind, key=key, owner_id=owner_id, expires_at_ms=now_ms + ttl_ms,
                                        acquired_at_ms=now_ms, epoch=epoch))


def _still_mine(current: Lease | None, mine: Lease) -> bool:
    return current is not None and current.owner_id == mine.owner_id and current.epoch == mine.epoch


def decide_renew(current: Lease | None, mine: Lease, *, ttl_ms: int, now_ms: int) -> LeaseDecision:
    """Extend a lease we still hold (same owner and epoch: nobody took it meanwhile, even if it
    expired); refuse otherwise — the guarded work must stop."""
    if current is None or not _still_mine(current, mine):
        return LeaseDecision("none", None)
    return LeaseDecision("write", replace(current, expires_at_ms=now_ms + ttl_ms))


def decide_release(current: Lease | None, mine: Lease) -> LeaseDecision:
    if current is None or not _still_mine(current, mine):
        return LeaseDecision("none", None)
    return LeaseDecision("release", current)


def is_live(lease: Lease | None, now_ms: int) -> bool:
    """Held by someone and not expired, by the reader's clock."""
    return lease is not None and lease.expires_at_ms > now_ms
