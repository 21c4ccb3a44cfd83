"""Account status writes are coalesced: at most one per second (routine fields: one per ten
seconds), later fields win, none lost."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing

from wadaemon.actors.status_writer import AccountStatusWriter, fold_patch
from wadaemon.domain import AccountDoc, HistorySyncResult
from wadaemon.store.contract import StoreUnavailable
from wadaemon.store.runner import StoreRunner


class RecordingStore:
    backend = "fake"

    def __init__(self) -> None:
        self.writes: list[tuple[float, AccountDoc]] = []
        self.fail_next = 0
        self.clock_now: Any = None

    def update_account(self, account_id: str, patch: AccountDoc) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailable("down")
        self.writes.append((self.clock_now(), patch))


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def test_fold_patch_later_non_none_fields_win() -> None:
    a = AccountDoc(state="connected", history_sync_count=1)
    b = AccountDoc(history_sync_count=2, last_history_sync_result=HistorySyncResult(saved=5))
    folded = fold_patch(a, b)
    assert folded.state == "connected"
    assert folded.history_sync_count == 2
    assert folded.last_history_sync_result == HistorySyncResult(saved=5)


async def test_many_posts_become_few_writes(autojump_clock: trio.testing.MockClock) -> None:
    store = RecordingStore()
    store.clock_now = lambda: trio.from_thread.run_sync(trio.current_time)
    writer = AccountStatusWriter("a", StoreRunner(store))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(1, 301):
            writer.post(AccountDoc(history_sync_count=i))
            await trio.sleep(0.01)  # simulated time: 300 posts over 3 s
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    times = [t for t, _ in store.writes]
    assert 2 <= len(times) <= 5
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(times)), times  # float sums of 0.01
    assert store.writes[-1][1].history_sync_count == 300


async def test_a_failed_write_is_retried_with_newer_fields(autojump_clock: trio.testing.MockClock) -> None:
    store = RecordingStore()
    store.clock_now = lambda: trio.from_thread.run_sync(trio.current_time)
    store.fail_next = 1
    writer = AccountStatusWriter("a", StoreRunner(store))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        writer.post(AccountDoc(state="connected"))
        await trio.sleep(0.5)
        writer.post(AccountDoc(history_sync_count=7))
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert len(store.writes) == 1
    written = store.writes[0][1]
    assert written.state == "connected" and written.history_sync_count == 7


async def test_shutdown_flushes_the_last_patch(autojump_clock: trio.testing.MockClock) -> None:
    store = RecordingStore()
    store.clock_now = lambda: trio.from_thread.run_sync(trio.current_time)
    writer = AccountStatusWriter("a", StoreRunner(store))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        writer.post(AccountDoc(state="connected"))
        await trio.sleep(0.1)
        writer.post(AccountDoc(state="disconnected"))
        nursery.cancel_scope.cancel()
    assert [w.state for _, w in store.writes] == ["connected", "disconnected"]


async def test_routine_fields_wait_for_company_and_a_prompt_patch_takes_them_along(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each write's patch is taken when its flush starts (in trio time), so the fields it
    carries tell when it started; recorded times would not (the simulated clock runs on while
    the worker thread writes)."""
    store = RecordingStore()
    store.clock_now = lambda: trio.from_thread.run_sync(trio.current_time)
    writer = AccountStatusWriter("a", StoreRunner(store))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        writer.post(AccountDoc(history_sync_count=1), routine=True)
        await trio.sleep(5)
        assert store.writes == []  # routine alone: still waiting for company
        writer.post(AccountDoc(state="connected"))  # prompt: written now, the count along
        await trio.sleep(2)
        for count in range(2, 30):  # a busy account: routine progress every second
            writer.post(AccountDoc(history_sync_count=count), routine=True)
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    counts = [w.history_sync_count for _, w in store.writes]
    assert store.writes[0][1].state == "connected" and counts[0] == 1
    assert counts[1] is not None and counts[1] >= 10  # next write >= 10 s later, not at once
    assert len(counts) <= 5  # 28 routine posts: a few writes
    assert counts[-1] == 29  # nothing lost (the last one flushed at shutdown)


async def test_a_patch_waiting_for_the_lane_at_shutdown_is_not_lost(autojump_clock: trio.testing.MockClock) -> None:
    """Cancelled while another write holds the account's lane: the final flush still writes it."""
    store = RecordingStore()
    store.clock_now = lambda: trio.from_thread.run_sync(trio.current_time)
    runner = StoreRunner(store)  # type: ignore[arg-type]
    writer = AccountStatusWriter("a", runner)
    held, release = trio.Event(), trio.Event()

    async def long_chunk() -> None:  # a long history chunk holds the account's lane
        async with runner.lane("a"):
            held.set()
            await release.wait()

    async with trio.open_nursery() as outer:
        outer.start_soon(long_chunk)
        await held.wait()
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            writer.post(AccountDoc(state="connected"))
            await trio.testing.wait_all_tasks_blocked()  # the flush is waiting for the lane
            assert store.writes == []
            nursery.cancel_scope.cancel()
            release.set()  # the chunk finishes while the writer shuts down
    assert [w.state for _, w in store.writes] == ["connected"]
