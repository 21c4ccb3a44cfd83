"""Work guarded by a lease: take it, renew it while the work runs, stop the work if it is lost.

The one helper behind the backfill lock (``whatsapp_backfill_locks/{accountId}``) and the
recent-sync lease (``recentSyncLease*`` on ``accounts/{accountId}``). The store decides
(compare-and-swap: an expired lease may be taken by anyone, renew and release only by the
holder); this module only drives it:

* **Renewed at a third of its life.** Two renewals can fail (a store hiccup) before the lease
  expires, and a renewal costs one write per ``ttl/3`` — a 15-minute backfill lock is renewed
  every 5 minutes, not every second.
* **Lost means stop.** When a renewal is refused (someone else holds it now: ours expired,
  e.g. while this process was frozen) or the store stayed unreachable past our expiry, the
  guarded work is *cancelled* and ``LeaseLost`` raised: from that moment another instance may
  be doing the same work, and two backfills of one account would interleave requests to one
  phone. Writes the cancelled work already made are harmless (idempotent by message id).
* **Released only while held**, shielded and bounded, so a cancelled run (shutdown) still
  frees the account for the next instance at once instead of after the lease's expiry. A lost
  lease is never released: the store would refuse anyway, and it is no longer ours to free.
* **Time from an injected clock** (epoch ms), so MockClock tests drive expiry and renewal.
* **Counted on the status board** (``DaemonStatus.lease_renewal_failed`` / ``lease_lost``):
  a renewal that failed and a lease lost are what an operator alerts on (/metrics).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from wadaemon.domain import Lease
from wadaemon.status import DaemonStatus
from wadaemon.store.contract import LeaseKind, StoreError, StoreUnavailable
from wadaemon.store.runner import StoreRunner

log = logging.getLogger("wadaemon.lease")

T = TypeVar("T")

#: Epoch milliseconds now (``time.time`` in production, trio's clock in tests).
WallClock = Callable[[], int]

RELEASE_TIMEOUT_S = 10.0


class LeaseBusy(Exception):
    """Another holder has the lease (``current`` as last read, None if it vanished since)."""

    def __init__(self, current: Lease | None) -> None:
        self.current = current
        holder = current.owner_id if current else "?"
        super().__init__(f"held by {holder}")


class LeaseLost(Exception):
    """The lease was lost while the guarded work ran; the work was stopped."""


async def run_under_lease(
    runner: StoreRunner,
    kind: LeaseKind,
    key: str,
    owner_id: str,
    work: Callable[[Lease], Awaitable[T]],
    *,
    ttl_ms: int,
    clock: WallClock,
    tag: str,
    board: DaemonStatus,
) -> T:
    """``await work(lease)`` while holding the lease; raises ``LeaseBusy`` when it cannot be
    taken and ``LeaseLost`` when it is lost midway (``work`` cancelled). ``tag`` names the
    log lines (``[backfill-lock] acquired|busy|released|lost``)."""
    store = runner.store
    lease = await runner.atomic(store.acquire_lease, kind, key, owner_id, ttl_ms=ttl_ms, now_ms=clock())
    if lease is None:
        current = await runner.atomic(store.read_lease, kind, key)
        log.info("[%s] busy key=%s holder=%s untilMs=%s", tag, key,
                 current.owner_id if current else "-", current.expires_at_ms if current else "-")
        raise LeaseBusy(current)
    log.info("[%s] acquired key=%s holder=%s untilMs=%d", tag, key, owner_id, lease.expires_at_ms)
    held = lease
    lost = False

    async def renew(scope: trio.CancelScope) -> None:
        nonlocal held, lost
        while True:
            await trio.sleep(ttl_ms / 3000)
            try:
                renewed = await runner.atomic(store.renew_lease, held, ttl_ms=ttl_ms, now_ms=clock())
            except StoreUnavailable as exc:
                board.lease_renewal_failed(kind)
                if clock() < held.expires_at_ms:
                    log.warning("[%s] renewal failed key=%s (retrying): %s", tag, key, exc)
                    continue
                renewed = None
            if renewed is None:
                lost = True
                board.lease_lost(kind)
                log.warning("[%s] lost key=%s holder=%s: stopping the guarded work", tag, key, owner_id)
                scope.cancel()
                return
            held = renewed

    result: T | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(renew, nursery.cancel_scope)
            result = await work(lease)
            nursery.cancel_scope.cancel()
    finally:
        if not lost:
            with trio.move_on_after(RELEASE_TIMEOUT_S) as scope:
                scope.shield = True
                try:
                    released = await runner.atomic(store.release_lease, held)
                    log.info("[%s] released key=%s holder=%s ok=%s", tag, key, owner_id, released)
                except StoreError as exc:
                    log.warning("[%s] release failed key=%s (it expires by itself): %s", tag, key, exc)
    if lost:
        raise LeaseLost(f"{kind} lease {key} lost")
    return result  # type: ignore[return-value]  # set unless lost (raised above)
