"""Lease upkeep cost: store writes per account-hour for ownership leases and heartbeats.

Three real ``Ownership`` actors (``wadaemon.cluster.ownership``) share 200 accounts on the
Firestore emulator, with a short retry period so that a run of seconds covers many renewal
rounds; the account subtrees are stand-ins (nothing but the fence), since only the cluster's
own writes are counted. Writes are counted at the store contract: a renewal round writes one
document per renewed lease, in one ``batch_write`` per instance; an acquisition or a release
one; a heartbeat one. The steady state (after everyone settled) is scaled to the default
timing: every figure is proportional to ``1 / retry period``.

    python -m bench leases        # or: python -m bench.leases (prints one JSON line)
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import trio

from bench.harness import emit, emulator_store, quiet_logs
from wadaemon.cluster.fence import Fence
from wadaemon.cluster.ownership import Ownership
from wadaemon.cluster.timing import LeaseTiming
from wadaemon.config import Settings
from wadaemon.domain import InstanceDoc, Lease
from wadaemon.status import DaemonStatus
from wadaemon.store.contract import Store

DEFAULT = LeaseTiming.of(Settings())
FAST = LeaseTiming(lease_ms=6_000, renew_deadline_ms=4_000, retry_period_ms=1_000)


class CountingStore:
    """The cluster's store calls, counted in documents written and in commits."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: Counter[str] = Counter()
        self.commits: Counter[str] = Counter()

    def renew_leases(self, held: Sequence[Lease], *, ttl_ms: int, now_ms: int) -> list[Lease | None]:
        renewed = self.store.renew_leases(held, ttl_ms=ttl_ms, now_ms=now_ms)
        self.writes["lease"] += sum(1 for lease in renewed if lease is not None)
        self.commits["lease"] += 1 if held else 0
        return renewed

    def acquire_lease(self, *args: Any, **kwargs: Any) -> Lease | None:
        lease = self.store.acquire_lease(*args, **kwargs)
        self.writes["lease"] += lease is not None
        self.commits["lease"] += 1
        return lease

    def release_lease(self, lease: Lease) -> bool:
        released = self.store.release_lease(lease)
        self.writes["lease"] += released
        self.commits["lease"] += 1
        return released

    def put_instance(self, doc: InstanceDoc) -> None:
        self.store.put_instance(doc)
        self.writes["heartbeat"] += 1
        self.commits["heartbeat"] += 1

    def delete_instance(self, instance_id: str) -> None:
        self.store.delete_instance(instance_id)
        self.writes["heartbeat"] += 1
        self.commits["heartbeat"] += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class IdleHost:
    """Account subtrees that do nothing but live inside their fence."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.scopes: dict[str, trio.CancelScope] = {}

    async def start_account(self, account_id: str, fence: Fence) -> None:
        outer = self.scopes[account_id] = trio.CancelScope()

        async def subtree(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with outer, fence.scope:
                task_status.started()
                await trio.sleep_forever()

        await self.nursery.start(subtree)

    async def stop_account(self, account_id: str) -> None:
        scope = self.scopes.pop(account_id, None)
        if scope is not None:
            scope.cancel()
            await trio.lowlevel.checkpoint()


async def measure(accounts: int, instances: int, seconds: float) -> dict[str, Any]:
    store = CountingStore(emulator_store())
    names = [f"acct-{i:04}" for i in range(accounts)]
    actors: list[Ownership] = []
    async with trio.open_nursery() as nursery:
        for n in range(instances):
            actor = Ownership(store=store, host=IdleHost(nursery), board=DaemonStatus(f"bench-{n}"),
                              instance_id=f"bench-{n}", timing=FAST, accounts=lambda: names)
            actors.append(actor)
            await nursery.start(actor.run)
        # Settled: every account held once, and nothing moved for a few rounds.
        deadline = time.monotonic() + 120
        stable_since = time.monotonic()
        last: list[frozenset[str]] = []
        while time.monotonic() - stable_since < 5 * FAST.retry_period_ms / 1000:
            held = [actor.running() for actor in actors]
            if held != last or sum(len(h) for h in held) != accounts:
                stable_since, last = time.monotonic(), held
            if time.monotonic() > deadline:
                raise RuntimeError("the instances never settled")
            await trio.sleep(0.1)
        startup = dict(store.writes)
        before_w, before_c = Counter(store.writes), Counter(store.commits)
        started = time.monotonic()
        await trio.sleep(seconds)
        window = time.monotonic() - started
        writes, commits = store.writes - before_w, store.commits - before_c
        shares = sorted(len(actor.running()) for actor in actors)
        nursery.cancel_scope.cancel()
    scale = FAST.retry_period_ms / DEFAULT.retry_period_ms  # per hour at the default timing
    per_account_hour = {kind: round(writes[kind] / accounts * 3600 / window * scale, 1)
                        for kind in ("lease", "heartbeat")}
    return {
        "accounts": accounts, "instances": instances, "window_s": round(window, 1),
        "fast_retry_period_ms": FAST.retry_period_ms, "default_retry_period_ms": DEFAULT.retry_period_ms,
        "startup_writes": startup, "shares": shares,
        "writes_per_account_hour": per_account_hour,
        "writes_per_account_hour_total": round(sum(per_account_hour.values()), 1),
        "commits_per_instance_hour": round((commits["lease"] + commits["heartbeat"]) / instances
                                           * 3600 / window * scale, 1),
        "writes_per_account_second": round(sum(per_account_hour.values()) / 3600, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    quiet_logs()
    emit(trio.run(measure, args.accounts, args.instances, args.seconds))


if __name__ == "__main__":
    main()
