"""The ownership actor on trio's MockClock, with several instances in one run sharing a real
SQLite store (store calls inline, so mock time only moves while everything waits)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.http.test_metrics import metric
from wadaemon.cluster.fence import Fence
from wadaemon.cluster.ownership import Ownership
from wadaemon.cluster.share import Peer, preferred
from wadaemon.cluster.timing import LeaseTiming
from wadaemon.metrics import Metrics
from wadaemon.status import DaemonStatus
from wadaemon.store.contract import Store, StoreUnavailable
from wadaemon.store.sqlite import SqliteStore

TIMING = LeaseTiming(lease_ms=3_000, renew_deadline_ms=2_000, retry_period_ms=500)
T0 = 1_700_000_000_000
ACCOUNTS = [f"acct-{i:02}" for i in range(20)]


def wall() -> int:
    """Every instance's wall clock, driven by trio's mock clock (clocks agree here)."""
    return T0 + int(trio.current_time() * 1000)


class Runs:
    """Every subtree run of every instance: (account, instance, start, end) on trio's clock."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, float, float | None]] = []

    def open(self, account: str, instance: str) -> int:
        self.spans.append((account, instance, trio.current_time(), None))
        return len(self.spans) - 1

    def close(self, index: int) -> None:
        account, instance, start, _ = self.spans[index]
        self.spans[index] = (account, instance, start, trio.current_time())

    def running(self, instance: str) -> set[str]:
        return {a for a, i, _, end in self.spans if i == instance and end is None}

    def assert_no_overlap(self) -> None:
        by_account: dict[str, list[tuple[float, float]]] = {}
        for account, _, start, end in self.spans:
            by_account.setdefault(account, []).append((start, end if end is not None else float("inf")))
        for account, spans in by_account.items():
            spans.sort()
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert end <= start, f"{account} ran on two instances at once: {spans}"


class FakeHost:
    """Runs a stand-in subtree per account inside the fence's scope, like the daemon does."""

    def __init__(self, name: str, runs: Runs, nursery: trio.Nursery) -> None:
        self.name = name
        self.runs = runs
        self.nursery = nursery
        self.scopes: dict[str, trio.CancelScope] = {}
        self.done: dict[str, trio.Event] = {}

    async def start_account(self, account_id: str, fence: Fence) -> None:
        outer = trio.CancelScope()
        done = trio.Event()
        self.scopes[account_id], self.done[account_id] = outer, done

        async def subtree(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            index = self.runs.open(account_id, self.name)
            try:
                with outer, fence.scope:
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                self.runs.close(index)
                done.set()

        await self.nursery.start(subtree)

    async def stop_account(self, account_id: str) -> None:
        scope = self.scopes.pop(account_id, None)
        if scope is not None:
            scope.cancel()
            await self.done.pop(account_id).wait()


class FlakyStore:
    """A store that can be cut off (every call raises StoreUnavailable), like a partition."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.cut = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.cut:
                raise StoreUnavailable("partitioned")
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "store.sqlite")
    yield store
    store.close()


class Instance:
    def __init__(self, name: str, store: Any, runs: Runs, nursery: trio.Nursery,
                 accounts: Callable[[], list[str]] = lambda: ACCOUNTS, pinned: tuple[str, ...] = ()) -> None:
        self.name = name
        self.board = DaemonStatus(name)
        self.board.set_mode("active")
        self.host = FakeHost(name, runs, nursery)
        self.ownership = Ownership(store=store, host=self.host, board=self.board, instance_id=name,
                                   timing=TIMING, accounts=accounts, pinned=pinned, wall=wall, threads=False)
        self.scope = trio.CancelScope()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            await self.ownership.run(task_status=task_status)


async def test_alone_it_takes_every_account_with_epoch_one(shared: SqliteStore, autojump_clock: Any) -> None:
    runs = Runs()
    async with trio.open_nursery() as nursery:
        a = Instance("a", shared, runs, nursery)
        await nursery.start(a.run)
        assert runs.running("a") == set(ACCOUNTS)
        assert [(lease.owner_id, lease.epoch) for lease in shared.list_account_leases()] == [("a", 1)] * 20
        await trio.sleep(60)  # a minute of renewals keeps everything in place
        assert runs.running("a") == set(ACCOUNTS)
        assert all(lease.expires_at_ms > wall() for lease in shared.list_account_leases())
        assert [i.instance_id for i in shared.list_instances()] == ["a"]
        a.scope.cancel()
    # Shutdown released every lease and removed the heartbeat.
    assert shared.list_account_leases() == []
    assert shared.list_instances() == []
    assert runs.running("a") == set()


async def test_renew_deadline_stops_the_subtree_before_the_lease_expires(shared: SqliteStore,
                                                                         autojump_clock: Any) -> None:
    runs = Runs()
    store = FlakyStore(shared)
    async with trio.open_nursery() as nursery:
        a = Instance("a", store, runs, nursery, accounts=lambda: ACCOUNTS[:3])
        await nursery.start(a.run)
        metrics = Metrics(a.board)
        await trio.sleep(10)
        assert metric(metrics, "wadaemon_account_leases_held") == 3
        last_renewal = max(lease.expires_at_ms for lease in shared.list_account_leases()) - TIMING.lease_ms
        store.cut = True
        await trio.sleep(TIMING.lease_ms / 1000 + 1)
        assert runs.running("a") == set()
        # Every renewal round while cut failed for the 3 leases; each lease was lost once.
        assert metric(metrics, "wadaemon_lease_renewals_failed_total", lease="account") >= 3 * 3
        assert metric(metrics, "wadaemon_leases_lost_total", lease="account") == 3
        assert metric(metrics, "wadaemon_account_leases_held") == 0
        for _, _, _, end in runs.spans:
            assert end is not None
            stopped_ms = T0 + end * 1000
            # stopped at the renew deadline of the last successful renewal, before expiry
            assert stopped_ms <= last_renewal + TIMING.renew_deadline_ms
            assert stopped_ms < last_renewal + TIMING.lease_ms
        assert a.board.mode == "passive"
        # The store comes back: the leases are still a's (nobody took them), so a takes them again.
        store.cut = False
        await trio.sleep(1)
        assert runs.running("a") == set(ACCOUNTS[:3])
        assert metric(metrics, "wadaemon_account_leases_held") == 3
        a.scope.cancel()


async def test_a_lease_taken_by_another_is_revoked_at_the_next_renewal(shared: SqliteStore,
                                                                       autojump_clock: Any) -> None:
    runs = Runs()
    async with trio.open_nursery() as nursery:
        a = Instance("a", shared, runs, nursery, accounts=lambda: ACCOUNTS[:2])
        await nursery.start(a.run)
        # Someone (an operator, a buggy peer) overwrites the lease far in the future.
        stolen = shared.acquire_lease("account", ACCOUNTS[0], "intruder", ttl_ms=60_000, now_ms=wall() + 10_000)
        assert stolen is not None and stolen.epoch == 2
        taken_at = trio.current_time()
        await trio.sleep(TIMING.retry_period_ms / 1000 + 0.01)
        assert runs.running("a") == {ACCOUNTS[1]}
        [span] = [s for s in runs.spans if s[0] == ACCOUNTS[0]]
        assert span[3] is not None and span[3] - taken_at <= TIMING.retry_period_ms / 1000
        assert shared.read_lease("account", ACCOUNTS[0]) == stolen  # a did not release someone else's lease
        metrics = Metrics(a.board)
        assert metric(metrics, "wadaemon_leases_lost_total", lease="account") == 1
        assert metric(metrics, "wadaemon_lease_renewals_failed_total", lease="account") == 0  # refused: lost
        assert metric(metrics, "wadaemon_account_leases_held") == 1
        a.scope.cancel()


async def test_a_new_instance_gets_its_share_by_hand_over_without_flapping(shared: SqliteStore,
                                                                           autojump_clock: Any) -> None:
    runs = Runs()
    async with trio.open_nursery() as nursery:
        a = Instance("a", shared, runs, nursery)
        await nursery.start(a.run)
        await trio.sleep(30)
        b = Instance("b", shared, runs, nursery)
        b_started = trio.current_time()
        await nursery.start(b.run)
        assert runs.running("b") == set()  # b takes nothing that is held
        await trio.sleep(TIMING.settle_ms / 1000 + 3 * TIMING.retry_period_ms / 1000)
        expected_b = {x for x in ACCOUNTS if preferred(x, [Peer("a", True), Peer("b", True)]) == "b"}
        assert 3 <= len(expected_b) <= 17
        assert runs.running("b") == expected_b
        assert runs.running("a") == set(ACCOUNTS) - expected_b
        moved_at = max(start for acc, inst, start, _ in runs.spans if inst == "b")
        assert moved_at - b_started < TIMING.lease_ms / 1000  # handed over, not waited out
        changes = len(runs.spans)
        await trio.sleep(300)  # five minutes of heartbeats: nothing moves
        assert len(runs.spans) == changes
        runs.assert_no_overlap()
        a.scope.cancel()
        b.scope.cancel()


async def test_accounts_of_a_partitioned_instance_move_after_expiry_never_overlapping(
        shared: SqliteStore, autojump_clock: Any) -> None:
    runs = Runs()
    cut_off = FlakyStore(shared)
    async with trio.open_nursery() as nursery:
        a = Instance("a", shared, runs, nursery)
        b = Instance("b", cut_off, runs, nursery)
        await nursery.start(a.run)
        await nursery.start(b.run)
        await trio.sleep(10)
        held_by_b = runs.running("b")
        assert held_by_b
        before = {lease.key: lease.epoch for lease in shared.list_account_leases()}
        cut_off.cut = True  # b can no longer reach the store (nor be reached): like a SIGKILL
        died = trio.current_time()
        await trio.sleep(TIMING.lease_ms / 1000 + 2)
        assert runs.running("b") == set()
        assert runs.running("a") == set(ACCOUNTS)
        for account in held_by_b:
            start = max(s for acc, inst, s, _ in runs.spans if acc == account and inst == "a")
            assert start - died <= (TIMING.lease_ms + TIMING.retry_period_ms) / 1000 + 0.01
        epochs = {lease.key: lease.epoch for lease in shared.list_account_leases()}
        assert all(epochs[x] == before[x] + 1 for x in held_by_b)  # one new holder each
        runs.assert_no_overlap()
        a.scope.cancel()
        b.scope.cancel()


async def test_graceful_stop_hands_everything_over_within_a_retry_period(shared: SqliteStore,
                                                                         autojump_clock: Any) -> None:
    runs = Runs()
    async with trio.open_nursery() as nursery:
        a = Instance("a", shared, runs, nursery)
        b = Instance("b", shared, runs, nursery)
        await nursery.start(a.run)
        await nursery.start(b.run)
        await trio.sleep(10)
        held_by_b = runs.running("b")
        b.scope.cancel()
        stopped = trio.current_time()
        await trio.sleep(2 * TIMING.retry_period_ms / 1000)
        assert runs.running("a") == set(ACCOUNTS)
        for account in held_by_b:
            start = max(s for acc, inst, s, _ in runs.spans if acc == account and inst == "a")
            assert start - stopped <= 2 * TIMING.retry_period_ms / 1000
        runs.assert_no_overlap()
        a.scope.cancel()


async def test_passive_standby_takes_over_when_the_active_one_dies(shared: SqliteStore,
                                                                   autojump_clock: Any) -> None:
    """A standby whose accounts are all held elsewhere stays passive, then takes them over."""
    runs = Runs()
    cut_off = FlakyStore(shared)
    both = [Peer("active", True), Peer("standby", True)]
    accounts = [x for x in ACCOUNTS if preferred(x, both) == "active"][:4]
    async with trio.open_nursery() as nursery:
        active = Instance("active", cut_off, runs, nursery, accounts=lambda: accounts)
        await nursery.start(active.run)
        standby = Instance("standby", shared, runs, nursery, accounts=lambda: accounts)
        standby.board.set_mode("passive")
        await nursery.start(standby.run)
        await trio.sleep(10)
        assert runs.running("active") == set(accounts)
        assert standby.board.mode == "passive"
        assert standby.ownership.running() == frozenset()
        cut_off.cut = True
        await trio.sleep(TIMING.lease_ms / 1000 + 2)
        assert runs.running("standby") == set(accounts)
        assert standby.board.mode == "active"  # type: ignore[comparison-overlap]  # narrowed to "passive" above; the ownership task changed it since
        runs.assert_no_overlap()
        active.scope.cancel()
        standby.scope.cancel()


async def test_a_failing_account_listing_keeps_what_runs(shared: SqliteStore, autojump_clock: Any) -> None:
    """The session store (PostgreSQL) failing for a while must not stop or move any account."""
    runs = Runs()
    failing = [False]

    def accounts() -> list[str]:
        if failing[0]:
            raise OSError("session database unreachable")
        return ACCOUNTS[:5]

    async with trio.open_nursery() as nursery:
        a = Instance("a", shared, runs, nursery, accounts=accounts)
        await nursery.start(a.run)
        failing[0] = True
        await trio.sleep(10)
        assert runs.running("a") == set(ACCOUNTS[:5])
        assert len(runs.spans) == 5
        a.scope.cancel()
