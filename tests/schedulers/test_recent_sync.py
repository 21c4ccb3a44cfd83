"""Recent-sync on trio's MockClock: gap bookkeeping, which threads cost a request, anchoring
after the gap and paging back until the answer reaches before it (real SQLite store)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from tests.schedulers.fakes import (
    BASE_MS,
    CountingStore,
    FakeAccount,
    FakeAccounts,
    InlineRunner,
    wall_ms,
)
from tests.store.builders import message, summary
from wadaemon.actors.coverage import add_gap
from wadaemon.config import Settings
from wadaemon.domain import MessageDoc, SyncGap
from wadaemon.schedulers.recent_sync import RecentSync

A, B, C = "40711111111@s.whatsapp.net", "40722222222@s.whatsapp.net", "40733333333@s.whatsapp.net"
GAP = SyncGap(from_ms=BASE_MS - 600_000, to_ms=BASE_MS - 300_000, reason="restart")


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def put(store: CountingStore, jid: str, *ts_ms: int) -> list[MessageDoc]:
    docs = [message(f"{jid[:5]}-{t}", account_id="a", client_jid=jid, ts_ms=t) for t in ts_ms]
    store.upsert_messages(docs)
    store.advance_threads([summary(max(ts_ms), account_id="a", client_jid=jid)])
    return docs


def recent_sync(store: CountingStore, accounts: FakeAccounts, **settings: object) -> RecentSync:
    values: dict[str, object] = {"instance_id": "me", "history_request_pace_ms": 0,
                                 "recent_sync_interval_ms": 120_000, **settings}
    return RecentSync(Settings(**values), InlineRunner(store), accounts,  # type: ignore[arg-type]
                      board=accounts.board, clock=wall_ms)


def test_gaps_fold_when_they_overlap() -> None:
    a = SyncGap(from_ms=10, to_ms=20, reason="restart")
    b = SyncGap(from_ms=15, to_ms=30, reason="disconnected")
    c = SyncGap(from_ms=40, to_ms=50, reason="restart")
    assert add_gap([c, a], b) == [SyncGap(from_ms=10, to_ms=30, reason="restart+disconnected"), c]
    assert add_gap([a], a) == [a]


async def test_only_threads_active_across_the_gap_cost_a_request(
        clock: trio.testing.MockClock, tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "s.sqlite")
    before = GAP.from_ms - 60_000
    put(store, A, before, GAP.to_ms + 10_000, GAP.to_ms + 20_000)  # active across the gap
    put(store, B, before - 1000, before)  # silent since before the gap: no request
    put(store, C, GAP.from_ms + 1000)  # only inside the gap (offline queue): anchored there
    account = FakeAccount("a")
    account.gaps = [GAP]
    sync = recent_sync(store, FakeAccounts([account]))

    async def phone() -> None:
        """Answers: A's first answer stays inside the gap (a message the queue dropped), its
        second reaches before the gap; C's answer reaches before the gap at once."""
        inside = message("dropped", account_id="a", client_jid=A, ts_ms=GAP.from_ms + 5000)
        pre = message("pre", account_id="a", client_jid=A, ts_ms=before)
        pre_c = message("pre-c", account_id="a", client_jid=C, ts_ms=GAP.from_ms - 5000)
        replies = {("a__" + A, 1): (inside, 1), ("a__" + A, 2): (pre, 0), ("a__" + C, 1): (pre_c, 1)}
        seen: dict[str, int] = {}
        while True:
            await account.asked_event.wait()
            chat, _, _ = account.asked[-1]
            tid = "a__" + chat
            seen[tid] = seen.get(tid, 0) + 1
            oldest, written = replies[(tid, seen[tid])]
            account.answer(tid, oldest=oldest, written=written)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(phone)
        await sync.tick()
        nursery.cancel_scope.cancel()
    anchors = [(chat, anchor) for chat, anchor, _ in account.asked]
    assert anchors == [(A, f"{A[:5]}-{GAP.to_ms + 10_000}"), (A, "dropped"), (C, f"{C[:5]}-{GAP.from_ms + 1000}")]
    checked = {jid: getattr(store.get_thread("a__" + jid), "gap_checked_through_ms", None) for jid in (A, C)}
    # C was anchored inside the gap: only what is older than its anchor is known complete.
    assert checked == {A: GAP.to_ms, C: GAP.from_ms + 1000}
    doc = store.get_account("a")
    assert doc is not None and doc.last_recent_sync_result is not None
    result = doc.last_recent_sync_result
    assert (result.ok, result.threads, result.messages, result.requests, result.gaps_open) == (True, 2, 2, 3, 1)
    # The next tick: every thread checked as far as it can be, nothing asked.
    asked = len(account.asked)
    await sync.tick()
    assert len(account.asked) == asked
    # A message after the gap arrives in C: now C can be anchored after whatever was newer
    # than its old anchor (the last messages a dead instance had journaled, say), and is.
    put(store, C, GAP.to_ms + 5000)
    async with trio.open_nursery() as nursery:
        # The answer brings the stranded message and reaches before the gap.
        nursery.start_soon(answer_once, account, message("pre-c2", account_id="a", client_jid=C,
                                                         ts_ms=GAP.from_ms - 5000))
        await sync.tick()
    assert account.asked[asked:][0][:2] == (C, f"{C[:5]}-{GAP.to_ms + 5000}")
    thread = store.get_thread("a__" + C)
    assert thread is not None and thread.gap_checked_through_ms == GAP.to_ms


async def answer_once(account: FakeAccount, oldest: MessageDoc) -> None:
    await account.asked_event.wait()
    chat, _, _ = account.asked[-1]
    account.answer("a__" + chat, oldest=oldest, written=1)


async def test_no_gap_no_cost_and_old_gaps_leave_the_window(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "s.sqlite")
    put(store, A, BASE_MS - 1000)
    quiet, stale = FakeAccount("a"), FakeAccount("b")
    stale.gaps = [SyncGap(from_ms=BASE_MS - 10 * 3_600_000, to_ms=BASE_MS - 9 * 3_600_000, reason="restart")]
    sync = recent_sync(store, FakeAccounts([quiet, stale]))
    reads, writes = store.reads(), store.writes()
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await trio.sleep(121)
        nursery.cancel_scope.cancel()
    assert sync.ticks == 1
    assert quiet.asked == [] and stale.asked == [] and stale.gaps == []  # 9 h old: out of the 6 h window
    assert (store.reads(), store.writes()) == (reads, writes)  # no live gap: nothing read or written
    assert store.get_account("a") is None and store.get_account("b") is None


async def test_capability_unavailable_said_once(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "s.sqlite")
    account = FakeAccount("a", available=False)
    account.gaps = [GAP]
    sync = recent_sync(store, FakeAccounts([account]))
    await sync.tick()
    first = store.get_account("a")
    assert first is not None and first.last_recent_sync_result is not None
    assert (first.last_recent_sync_result.ok, first.last_recent_sync_result.error_code) == (
        False, "history_requests_unavailable")
    writes = store.writes()
    await sync.tick()
    await sync.tick()
    assert store.writes() == writes and account.asked == [] and account.gaps == [GAP]
