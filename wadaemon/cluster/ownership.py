"""The ownership actor: this instance's account leases, its heartbeat, and fair share.

Every retry period (``timing``), one tick:

1. **renew** every held account lease in one store round (``Store.renew_leases``); a lease
   reported lost is revoked at once (its subtree stopped, its writes refused). A lease whose
   renewals keep failing is cut off by its fence's deadline without this actor (``fence``);
2. **heartbeat**: ``whatsapp_instances/{instanceId}`` with the accounts held;
3. **look**: every heartbeat and every account lease, and the accounts there are (sessions);
4. **act** on ``share.plan``: hand over what another settled instance should run (stop the
   subtree, *then* release the lease: the old socket is closed before anyone may connect),
   take free accounts this instance should run (acquire, then start the subtree).

What it holds, renewals that failed and leases lost are counted on the status board
(``DaemonStatus.set_account_leases_held``, ``lease_renewal_failed``, ``lease_lost``: /metrics).

Renewal runs in a task of its own, on a worker thread of its own (a ``CapacityLimiter`` of one
that nothing else uses): neither a slow look at the others, nor a burst of acquisitions, nor a
backlog of account writes can delay the next renewal. Starting and stopping subtrees runs in
tasks of their own too, so a slow socket start never delays anything else.

On shutdown (cancellation: SIGTERM) the actor stops taking accounts, waits for every account
subtree to finish (they flush under their still-valid leases), then releases every lease and
deletes its heartbeat, so the others take over at once instead of after expiry. All of it is
shielded and bounded by ``LEAVE_TIMEOUT_S``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

import trio

from wadaemon.cluster.fence import Fence
from wadaemon.cluster.share import FreeSince, Membership, Peer, plan
from wadaemon.cluster.timing import LeaseTiming
from wadaemon.domain import InstanceDoc, Lease
from wadaemon.status import ClusterView, DaemonStatus
from wadaemon.store.contract import Store, StoreError

log = logging.getLogger("wadaemon.cluster")

T = TypeVar("T")

ANNOUNCE_TIMEOUT_S = 2.0
LEAVE_TIMEOUT_S = 14.0  # inside the daemon's 30 s stop budget (ACCOUNTS_STOP_S + ABANDON_GRACE_S)
VERSION = "0.1.0"


class AccountHost(Protocol):
    """What ownership drives: the daemon's dynamic set of account subtrees."""

    async def start_account(self, account_id: str, fence: Fence) -> None:
        """Start the account's subtree inside ``fence.scope``; return once it is up."""
        ...

    async def stop_account(self, account_id: str) -> None:
        """Stop the account's subtree (if it runs) and return once it is gone."""
        ...


def wall_ms() -> int:
    return int(time.time() * 1000)


class Ownership:
    def __init__(
        self,
        *,
        store: Store,
        host: AccountHost,
        board: DaemonStatus,
        instance_id: str,
        timing: LeaseTiming,
        accounts: Callable[[], Sequence[str]],
        pinned: Sequence[str] = (),
        wall: Callable[[], int] = wall_ms,
        threads: bool = True,
    ) -> None:
        """``wall`` is the wall clock written into leases and heartbeats; deadlines use trio's
        clock. ``threads=False`` makes store calls inline (tests on trio's MockClock, whose
        time must not run while a worker thread works)."""
        self.store = store
        self.host = host
        self.board = board
        self.instance_id = instance_id
        self.timing = timing
        self._accounts = accounts
        self.pinned = frozenset(pinned)
        self._wall = wall
        self._threads = threads
        #: Looks, acquisitions, releases: several at once, so that taking over a dead or
        #: stopping instance's accounts costs about one store round trip, not one per account.
        self._limiter = trio.CapacityLimiter(8)
        self._renew_limiter = trio.CapacityLimiter(1)
        self.held: dict[str, Fence] = {}
        self._busy: set[str] = set()  # being started or stopped
        self._membership = Membership(instance_id, timing)
        self._free = FreeSince()
        self._started_at_ms = wall()
        self._nursery: trio.Nursery | None = None
        self._last_tick = 0.0
        self._universe: list[str] = []
        self.ticks = 0

    def running(self) -> frozenset[str]:
        """The accounts this instance runs now (what schedulers may work on)."""
        return frozenset(a for a, fence in self.held.items() if fence.valid())

    async def _call(self, fn: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter | None = None,
                    **kwargs: Any) -> T:
        if not self._threads:
            await trio.lowlevel.checkpoint()
            return fn(*args, **kwargs)
        # Abandoned on cancellation: a frozen store must not hold the shutdown past its bound.
        # Safe for every call here: an abandoned renewal counts as failed (the deadline rule
        # holds), an abandoned acquisition or release at worst leaves a lease to expire.
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=limiter or self._limiter,
                                             abandon_on_cancel=True)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                # The first tick starts its accounts before reporting started, so a daemon
                # that is "up" already runs what it could take.
                nursery.start_soon(self._renew_loop)  # first: the first tick's leases need it
                await self._tick(first=True)
                task_status.started()
                while True:
                    await trio.sleep_until(self._last_tick + self.timing.retry_period_ms / 1000)
                    await self._tick(first=False)
        finally:
            self._nursery = None
            with trio.move_on_after(LEAVE_TIMEOUT_S) as scope:
                scope.shield = True
                await self._leave()

    # -- one tick -----------------------------------------------------------------------------
    async def _renew_loop(self) -> None:
        while True:
            began = trio.current_time()
            await self._renew()
            await trio.sleep_until(began + self.timing.retry_period_ms / 1000)

    async def _tick(self, *, first: bool) -> None:
        self._last_tick = trio.current_time()
        self.ticks += 1
        now = self._wall()
        try:
            await self._call(self.store.put_instance, self._heartbeat(now, accepting=True))
            instances, leases, accounts = await self._look()
        except StoreError as exc:
            log.warning("[cluster] instance=%s store unavailable: %s", self.instance_id, exc)
            return
        now_ms = trio.current_time() * 1000
        peers = self._membership.observe(instances, now_ms=now_ms, wall_ms=now)
        universe = [a for a in accounts if not self.pinned or a in self.pinned]
        me = Peer(self.instance_id, settled=True, pinned=self.pinned)
        by_account = {lease.key: lease for lease in leases}
        decided = plan(me=me, peers=peers, accounts=universe, leases=by_account,
                       held=[*self.held, *self._busy], wall_ms=now, timing=self.timing,
                       free_for_ms=self._free.update(universe, by_account, now_ms=now_ms, wall_ms=now))
        self.board.set_cluster(ClusterView(instances=instances, leases=leases, at_ms=now))
        for account_id in decided.hand_over:
            if account_id in self.held and account_id not in self._busy:
                self._spawn(self._hand_over, account_id)
        takes = [a for a in decided.take if a not in self._busy and a not in self.held]
        if first:  # all at once, and wait for them
            async with trio.open_nursery() as starting:
                for account_id in takes:
                    self._busy.add(account_id)
                    starting.start_soon(self._take, account_id)
        else:
            for account_id in takes:
                self._spawn(self._take, account_id)
        self._update_mode()

    async def _look(self) -> tuple[list[InstanceDoc], list[Lease], Sequence[str]]:
        instances = await self._call(self.store.list_instances)
        leases = await self._call(self.store.list_account_leases)
        try:
            self._universe = list(await self._call(self._accounts))
        except Exception as exc:
            # The session store (e.g. PostgreSQL) failing must not stop the accounts that run:
            # keep the last known list and try again next tick.
            log.warning("[cluster] instance=%s listing the accounts failed (keeping the last list): %s",
                        self.instance_id, exc)
        return instances, leases, self._universe

    def _heartbeat(self, now: int, *, accepting: bool) -> InstanceDoc:
        return InstanceDoc(instance_id=self.instance_id, heartbeat_at_ms=now, started_at_ms=self._started_at_ms,
                           version=VERSION, accounts=sorted(self.held), pinned_accounts=sorted(self.pinned),
                           accepting=accepting)

    async def _renew(self) -> None:
        for account_id in [a for a, fence in self.held.items() if not fence.valid()]:
            if account_id not in self._busy:
                log.warning("[cluster] accountId=%s renew deadline passed: subtree stopped", account_id)
                self.board.lease_lost("account")
                self._spawn(self._drop, account_id, True)
        # Accounts still starting are renewed too (a slow socket start must not cost the lease);
        # those being given up already left ``held``.
        held = {a: fence for a, fence in self.held.items() if fence.valid()}
        if not held:
            return
        sent = trio.current_time()
        try:
            renewed = await self._call(self.store.renew_leases, [fence.lease for fence in held.values()],
                                       ttl_ms=self.timing.lease_ms, now_ms=self._wall(),
                                       limiter=self._renew_limiter)
        except StoreError as exc:
            log.warning("[cluster] instance=%s lease renewal failed (%d leases): %s", self.instance_id, len(held), exc)
            self.board.lease_renewal_failed("account", len(held))
            return
        deadline = sent + self.timing.renew_deadline_ms / 1000
        for (account_id, fence), lease in zip(held.items(), renewed, strict=True):
            if lease is None:
                log.warning("[cluster] accountId=%s lease lost epoch=%d: stopping", account_id, fence.lease.epoch)
                self.board.lease_lost("account")
                fence.revoke()
                self._spawn(self._drop, account_id, False)
            elif not fence.renewed(lease, deadline):
                self.board.lease_lost("account")
                self._spawn(self._drop, account_id, True)

    # -- taking and giving up -----------------------------------------------------------------
    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._nursery is not None
        self._busy.add(args[0])
        self._nursery.start_soon(fn, *args)

    async def _take(self, account_id: str) -> None:
        self._busy.add(account_id)
        try:
            sent = trio.current_time()
            try:
                lease = await self._call(self.store.acquire_lease, "account", account_id, self.instance_id,
                                         ttl_ms=self.timing.lease_ms, now_ms=self._wall())
            except StoreError as exc:
                log.warning("[cluster] accountId=%s acquire failed: %s", account_id, exc)
                return
            if lease is None:
                return  # someone else was quicker
            fence = Fence(lease, sent + self.timing.renew_deadline_ms / 1000)
            self.held[account_id] = fence
            log.info("[cluster] accountId=%s acquired epoch=%d instance=%s", account_id, lease.epoch, self.instance_id)
            try:
                await self.host.start_account(account_id, fence)
            except Exception as exc:
                log.warning("[cluster] accountId=%s did not start: %s", account_id, exc)
                await self._give_up(account_id)
        finally:
            self._busy.discard(account_id)
            self._update_mode()

    async def _hand_over(self, account_id: str) -> None:
        """Another instance should run it: stop here first, then release the lease."""
        try:
            log.info("[cluster] accountId=%s handing over instance=%s", account_id, self.instance_id)
            await self._give_up(account_id)
        finally:
            self._busy.discard(account_id)
            self._update_mode()

    async def _drop(self, account_id: str, release: bool) -> None:
        """The lease is lost (or its deadline passed): stop the subtree; release the lease if
        it might still be ours, so a successor need not wait for expiry."""
        try:
            if release:
                await self._give_up(account_id)
            else:
                self.held.pop(account_id, None)
                await self.host.stop_account(account_id)
        finally:
            self._busy.discard(account_id)
            self._update_mode()

    async def _give_up(self, account_id: str) -> None:
        fence = self.held.pop(account_id, None)
        await self.host.stop_account(account_id)
        if fence is None:
            return
        fence.revoke()
        try:
            await self._call(self.store.release_lease, fence.lease)
            log.info("[cluster] accountId=%s released epoch=%d", account_id, fence.lease.epoch)
        except StoreError as exc:
            log.warning("[cluster] accountId=%s release failed (it expires instead): %s", account_id, exc)

    async def _leave(self) -> None:
        """Shutdown: every subtree stopped (flushed under its lease), then every lease released
        and the heartbeat deleted."""
        with contextlib.suppress(StoreError), trio.move_on_after(ANNOUNCE_TIMEOUT_S):
            # say so first, or others might hand us accounts while we drain
            await self._call(self.store.put_instance, self._heartbeat(self._wall(), accepting=False))
        async with trio.open_nursery() as nursery:
            for account_id in list(self.held):
                nursery.start_soon(self.host.stop_account, account_id)
        fences = [fence for fence in self.held.values() if fence.valid()]
        self.held.clear()
        for fence in fences:
            fence.revoke()
            try:
                await self._call(self.store.release_lease, fence.lease)
            except StoreError as exc:
                log.warning("[cluster] accountId=%s release failed (it expires instead): %s", fence.lease.key, exc)
        try:
            await self._call(self.store.delete_instance, self.instance_id)
        except StoreError as exc:
            log.warning("[cluster] instance=%s heartbeat not deleted: %s", self.instance_id, exc)
        self.board.set_account_leases_held(0)
        log.info("[cluster] instance=%s left: %d leases released", self.instance_id, len(fences))

    def _update_mode(self) -> None:
        self.board.set_account_leases_held(len(self.held))
        if self.board.mode in ("active", "passive"):
            self.board.set_mode("active" if self.held else "passive")
