"""The auto-backfill scheduler on trio's MockClock: a real SQLite store, stand-in accounts.

Time moves only when every task is blocked (autojump), so hours of schedule pass in
milliseconds and every assertion about "when" is exact."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from tests.http.test_metrics import metric
from tests.schedulers.fakes import (
    BASE_MS,
    CountingStore,
    FakeAccount,
    FakeAccounts,
    scheduler,
    wall_ms,
)
from tests.store.builders import message, summary
from wadaemon.config import Settings, load_settings
from wadaemon.daemon import Daemon
from wadaemon.domain import AccountDoc, AutoBackfillStatus, ms_to_datetime
from wadaemon.metrics import Metrics
from wadaemon.schedulers.auto_backfill import AutoBackfill
from wadaemon.store.contract import StoreUnavailable
from wadaemon.store.encoding import document_fields
from wadaemon.store.sqlite import SqliteStore

PEER = "40711111111@s.whatsapp.net"


class Finished(list[tuple[str, AutoBackfillStatus, float]]):
    """Runs that ended: (account, final status, trio time); ``until(n)`` waits for n of them."""

    def __init__(self) -> None:
        super().__init__()
        self._more = trio.Event()

    def add(self, account_id: str, status: AutoBackfillStatus) -> None:
        self.append((account_id, status, trio.current_time()))
        self._more.set()
        self._more = trio.Event()

    async def until(self, count: int) -> None:
        while len(self) < count:
            await self._more.wait()


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)  # store calls run inline (fakes.InlineRunner)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "store.sqlite")


def seed_thread(store: SqliteStore, account_id: str) -> str:
    """One thread with one stored message: something to anchor a request on."""
    doc = message("m1", account_id=account_id, client_jid=PEER, ts_ms=BASE_MS - 3_600_000)
    store.upsert_messages([doc])
    store.advance_threads([summary(doc.ts_client_ms, account_id=account_id, client_jid=PEER)])
    return doc.thread_id


@asynccontextmanager
async def running(sched: AutoBackfill) -> AsyncIterator[Finished]:
    finished = Finished()
    sched.on_finished = finished.add
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        yield finished
        nursery.cancel_scope.cancel()


def status_fields(store: SqliteStore, account_id: str) -> dict[str, object]:
    doc = store.get_account(account_id) or AccountDoc()
    fields = msgspec.to_builtins(document_fields(doc))  # as stored: absent fields left out
    keep = ("lastAutoBackfillAt", "lastAutoBackfillSuccessAt", "lastAutoBackfillAttemptAt", "lastAutoBackfillStatus",
            "autoBackfillLeaseHolder", "autoBackfillLeaseUntil", "lastBackfillAt", "lastBackfillStatus",
            "lastBackfillStats", "lastBackfillError", "lastAutoRepairAt")
    return {k: fields[k] for k in keep if k in fields}


async def test_connect_jitter_within_10_to_40_seconds(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    for seed in range(6):
        accounts = FakeAccounts([FakeAccount("a")])
        sched = scheduler(SqliteStore(tmp_path / f"{seed}.sqlite"), accounts, seed=seed)
        t0 = trio.current_time()
        async with running(sched) as finished:
            await trio.sleep(45)
        assert len(finished) == 1 and finished[0][1].ok
        assert 10 <= finished[0][2] - t0 <= 40


async def test_full_cycle_running_success_cooldown_next_run(clock: trio.testing.MockClock, store: CountingStore, capsys: pytest.CaptureFixture[str]) -> None:
    """The status fields an operator reads, as stored, through one whole cycle."""
    thread_id = seed_thread(store, "shop")
    account = FakeAccount("shop")
    sched = scheduler(store, FakeAccounts([account]), auto_backfill_interval_ms=720_000,
                      auto_backfill_cooldown_ms=3_600_000, auto_repair_cooldown_ms=3_600_000,
                      backfill_count=20, backfill_messages_per_thread=20)
    older = message("m0", account_id="shop", client_jid=PEER, ts_ms=BASE_MS - 7_200_000)
    cycle: list[tuple[str, dict[str, object]]] = []
    async with running(sched) as finished:
        await account.asked_event.wait()  # the connect run (10-40 s after start) asked the phone
        cycle.append(("1 running (connect trigger)", status_fields(store, "shop")))
        assert account.answer(thread_id, oldest=older, written=20)
        await finished.until(1)
        cycle.append(("2 success", status_fields(store, "shop")))
        reads, writes = store.reads(), store.writes()
        await trio.sleep(721)  # the first periodic tick falls inside the cooldown
        assert sched.ticks == 1 and len(finished) == 1
        assert (store.reads(), store.writes()) == (reads, writes)  # it knew: nothing read or written
        assert account.status.backfill_blocked == "cooldown"
        cycle.append(("3 cooldown (tick skipped it; board: "
                      f"blocked={account.status.backfill_blocked} until={account.status.backfill_next_eligible_ms})",
                      status_fields(store, "shop")))
        # Cooldown ends 3600 s after the success; the next periodic tick after that runs it.
        await trio.sleep(3600 - 721)
        await account.asked_event.wait()
        cycle.append(("4 next run (periodic trigger)", status_fields(store, "shop")))
        assert trio.current_time() == 4320  # ticks at 720 s ... 3600 s fell inside the cooldown
        account.answer(thread_id, oldest=older, written=20)
        await finished.until(2)
        cycle.append(("5 success again", status_fields(store, "shop")))
    running_status = cycle[0][1]["lastAutoBackfillStatus"]
    assert running_status == {"running": True, "startedAt": running_status["startedAt"],  # type: ignore[index]
                              "trigger": "connect", "holder": "me"}
    assert cycle[0][1]["autoBackfillLeaseHolder"] == "me"
    success = cycle[1][1]["lastAutoBackfillStatus"]
    assert success == {"running": False, "ok": True, "threads": 1, "messages": 20, "errors": 0,
                       "durationMs": success["durationMs"]}  # type: ignore[index]
    assert "autoBackfillLeaseHolder" not in cycle[1][1]  # released
    assert cycle[2][1] == cycle[1][1]
    assert cycle[3][1]["lastAutoBackfillStatus"]["trigger"] == "periodic"  # type: ignore[index]
    assert cycle[4][1]["lastAutoBackfillStatus"]["ok"] is True  # type: ignore[index]
    if True:  # shown with pytest -s: the cycle as an operator sees it in the store
        print("\n--- accounts/shop status fields through one cycle (MockClock; epoch of trio time 0 ="
              f" {ms_to_datetime(BASE_MS).isoformat()}) ---")
        for label, fields in cycle:
            print(label)
            print("   ", json.dumps(fields, sort_keys=True))


async def test_failed_run_backs_off_then_retries(clock: trio.testing.MockClock, store: CountingStore) -> None:
    store.update_account("a", AccountDoc(
        last_auto_backfill_attempt_at=ms_to_datetime(BASE_MS - 60_000),
        last_auto_backfill_at=ms_to_datetime(BASE_MS - 50_000),
        last_auto_backfill_status=AutoBackfillStatus(running=False, ok=False, error_code="store_error",
                                                     error_message="boom", duration_ms=1)))
    account = FakeAccount("a")
    sched = scheduler(store, FakeAccounts([account]), auto_backfill_interval_ms=120_000,
                      auto_backfill_attempt_backoff_ms=600_000)
    async with running(sched) as finished:
        await trio.sleep(50)
        assert finished == [] and account.status.backfill_blocked == "backoff"  # the connect trigger too
        assert account.status.backfill_next_eligible_ms == BASE_MS + 540_000
        await trio.sleep(480)  # ticks at 120, 240, 360, 480: still backing off
        assert finished == []
        await trio.sleep(120)  # tick at 600: backoff over at 540
        assert [f[1].ok for f in finished] == [True]


async def test_concurrency_cap_counts_runs_before_their_lock(clock: trio.testing.MockClock, store: CountingStore) -> None:
    accounts = [FakeAccount(f"a{i}") for i in range(4)]
    threads = {a.account_id: seed_thread(store, a.account_id) for a in accounts}
    sched = scheduler(store, FakeAccounts(accounts), backfill_max_concurrency=2,
                      auto_backfill_max_accounts_per_tick=4, auto_backfill_interval_ms=120_000)
    async with running(sched) as finished:
        await trio.sleep(45)  # every connect trigger has fired
        asking = [a for a in accounts if a.requests.outstanding()]
        assert len(asking) == 2
        running_in_store = [a.account_id for a in accounts
                            if (doc := store.get_account(a.account_id)) and doc.last_auto_backfill_status
                            and doc.last_auto_backfill_status.running]
        assert sorted(running_in_store) == sorted(a.account_id for a in asking)
        for a in asking:
            a.answer(threads[a.account_id], oldest=None, written=0, end=True)
        await trio.sleep(200)  # the deferred ones run at the next opportunity
        for a in accounts:
            if a.requests.outstanding():
                a.answer(threads[a.account_id], oldest=None, written=0, end=True)
        await trio.sleep(200)
        assert sorted(f[0] for f in finished) == ["a0", "a1", "a2", "a3"]


async def test_lock_busy_then_free(clock: trio.testing.MockClock, store: CountingStore) -> None:
    other = store.acquire_lease("backfill", "a", "other-instance", ttl_ms=100_000, now_ms=BASE_MS)
    assert other is not None
    account = FakeAccount("a")
    sched = scheduler(store, FakeAccounts([account]), auto_backfill_interval_ms=120_000)
    async with running(sched) as finished:
        await trio.sleep(45)
        assert finished == []  # busy: not our attempt, nothing written
        assert store.get_account("a") is None or store.get_account("a").last_auto_backfill_status is None  # type: ignore[union-attr]
        assert (account.status.backfill_blocked, account.status.backfill_lock_holder) == ("lock_busy", "other-instance")
        assert account.status.backfill_next_eligible_ms == BASE_MS + 100_000
        await trio.sleep(80)  # tick at 120 s: the lock expired at 100 s
        assert [f[1].ok for f in finished] == [True]
        runs = account.status.backfill_runs
        assert runs == {"lock_busy": 1, "success": 1}, runs


async def test_lock_lost_mid_run_stops_the_run(clock: trio.testing.MockClock, store: CountingStore) -> None:
    thread_id = seed_thread(store, "a")
    account = FakeAccount("a")
    sched = scheduler(store, FakeAccounts([account]), auto_backfill_lease_ms=9_000)
    async with running(sched) as finished:
        await account.asked_event.wait()
        mine = store.read_lease("backfill", "a")
        assert mine is not None and mine.owner_id == "me"
        # Our process "froze" past the expiry and another instance took the lock.
        assert store.release_lease(mine)
        assert store.acquire_lease("backfill", "a", "thief", ttl_ms=60_000, now_ms=wall_ms()) is not None
        await trio.sleep(4)  # the renewal at a third of 9 s is refused
        assert [(f[1].ok, f[1].error_code) for f in finished] == [(False, "lock_lost")]
        assert account.requests.outstanding() == []  # the guarded work was cancelled
        assert not account.answer(thread_id, oldest=None, written=0)  # nobody waits any more
        metrics = Metrics(sched.board)
        assert metric(metrics, "wadaemon_backfill_runs_total", account_id="a", result="lock_lost") == 1
        assert metric(metrics, "wadaemon_leases_lost_total", lease="backfill") == 1
        assert metric(metrics, "wadaemon_lease_renewals_failed_total", lease="backfill") == 0  # refused, not failed
        assert metric(metrics, "wadaemon_history_requests_answered_total", account_id="a", timing="late") == 1
    doc = store.get_account("a")
    assert doc is not None and doc.last_auto_backfill_status is not None
    assert doc.last_auto_backfill_status.error_code == "lock_lost"
    lock = store.read_lease("backfill", "a")
    assert lock is not None and lock.owner_id == "thief"  # never released by the loser


async def test_lock_renewals_failing_in_the_store_are_counted_then_the_lock_is_lost(
        clock: trio.testing.MockClock, store: CountingStore) -> None:
    seed_thread(store, "a")
    account = FakeAccount("a")
    sched = scheduler(store, FakeAccounts([account]), auto_backfill_lease_ms=9_000)
    metrics = Metrics(sched.board)

    def unreachable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("injected: renew_lease")

    async with running(sched) as finished:
        await account.asked_event.wait()
        store.renew_lease = unreachable  # type: ignore[method-assign]
        await trio.sleep(3.5)  # the renewal at a third of 9 s failed; the lock still runs
        assert metric(metrics, "wadaemon_lease_renewals_failed_total", lease="backfill") == 1
        assert metric(metrics, "wadaemon_leases_lost_total", lease="backfill") == 0
        assert finished == [] and account.requests.outstanding()
        await trio.sleep(6)  # failed at 6 s and at 9 s, its expiry: lost, the run stopped
        assert [(f[1].ok, f[1].error_code) for f in finished] == [(False, "lock_lost")]
        assert metric(metrics, "wadaemon_lease_renewals_failed_total", lease="backfill") == 3
        assert metric(metrics, "wadaemon_leases_lost_total", lease="backfill") == 1
        assert metric(metrics, "wadaemon_backfill_runs_total", account_id="a", result="lock_lost") == 1
        assert metric(metrics, "wadaemon_history_requests_sent_total", account_id="a") == 1
        assert metric(metrics, "wadaemon_lease_renewals_failed_total", lease="account") == 0


async def test_stale_running_from_a_crash_waits_for_its_lock_then_runs(clock: trio.testing.MockClock, store: CountingStore) -> None:
    started = ms_to_datetime(BASE_MS - 600_000)
    store.update_account("a", AccountDoc(
        last_auto_backfill_attempt_at=started,
        last_auto_backfill_status=AutoBackfillStatus(running=True, started_at=started, trigger="periodic",
                                                     holder="dead-1")))
    assert store.acquire_lease("backfill", "a", "dead-1", ttl_ms=660_000, now_ms=BASE_MS - 600_000)
    account = FakeAccount("a")
    sched = scheduler(store, FakeAccounts([account]), auto_backfill_interval_ms=120_000)
    async with running(sched) as finished:
        await trio.sleep(45)
        assert finished == [] and account.status.backfill_blocked == "lock_busy"
        await trio.sleep(80)  # the dead holder's lock expired at 60 s; the tick at 120 s runs it
        assert [f[1].ok for f in finished] == [True]
    doc = store.get_account("a")
    assert doc is not None and doc.last_auto_backfill_status is not None
    assert doc.last_auto_backfill_status.ok and not doc.last_auto_backfill_status.running


async def test_stale_running_with_expired_lock_is_reported_interrupted_at_once(clock: trio.testing.MockClock, store: CountingStore) -> None:
    started = ms_to_datetime(BASE_MS - 3_600_000)
    store.update_account("a", AccountDoc(
        last_auto_backfill_attempt_at=started,
        last_auto_backfill_status=AutoBackfillStatus(running=True, started_at=started, trigger="connect",
                                                     holder="dead-1")))
    account = FakeAccount("a")
    sched = scheduler(store, FakeAccounts([account]))
    async with running(sched) as finished:
        await trio.sleep(1)
        doc = store.get_account("a")
        assert doc is not None and doc.last_auto_backfill_status is not None
        status = doc.last_auto_backfill_status
        assert (status.running, status.ok, status.error_code) == (False, False, "interrupted")
        assert "dead-1" in (status.error_message or "")
        await trio.sleep(44)  # not a failure of the account: no backoff, the connect run goes ahead
        assert [f[1].ok for f in finished] == [True]


async def test_manual_trigger_outcomes(clock: trio.testing.MockClock, store: CountingStore) -> None:
    threads = {a: seed_thread(store, a) for a in ("a", "b")}
    a, b, c = FakeAccount("a"), FakeAccount("b"), FakeAccount("c", available=False)
    d = FakeAccount("d")
    store.update_account("a", AccountDoc(last_auto_backfill_success_at=ms_to_datetime(BASE_MS),
                                         last_auto_backfill_at=ms_to_datetime(BASE_MS)))
    assert store.acquire_lease("backfill", "d", "elsewhere", ttl_ms=10_000_000, now_ms=BASE_MS)
    accounts = FakeAccounts([a, b, c, d])
    a.connects = b.connects = d.connects = 0  # no connect triggers in this test
    sched = scheduler(store, accounts, backfill_max_concurrency=1)
    async with running(sched) as finished:
        assert await sched.trigger_backfill("a") == "started"  # inside its cooldown: manual bypasses it
        await a.asked_event.wait()
        assert await sched.trigger_backfill("a") == "running"
        assert await sched.trigger_backfill("b") == "queued"  # the one slot is taken
        assert await sched.trigger_backfill("c") == "unavailable"
        assert await sched.trigger_backfill("nope") == "unknown_account"
        a.answer(threads["a"], oldest=None, written=0, end=True)
        await b.asked_event.wait()  # the queued run started once the slot freed
        b.answer(threads["b"], oldest=None, written=0, end=True)
        await finished.until(2)
        assert await sched.trigger_backfill("d") == "running_elsewhere"  # manual never bypasses the lock
        assert [(f[0], f[1].ok) for f in finished] == [("a", True), ("b", True)]
    doc = store.get_account("a")
    assert doc is not None and doc.last_auto_backfill_status is not None and doc.last_auto_backfill_status.ok


async def test_tick_over_many_accounts_in_cooldown_reads_and_writes_nothing(clock: trio.testing.MockClock, store: CountingStore) -> None:
    accounts = [FakeAccount(f"acct-{i:03d}") for i in range(50)]
    for account in accounts:
        store.update_account(account.account_id, AccountDoc(
            last_auto_backfill_success_at=ms_to_datetime(BASE_MS), last_auto_backfill_at=ms_to_datetime(BASE_MS)))
    sched = scheduler(store, FakeAccounts(accounts), auto_backfill_interval_ms=60_000)
    async with running(sched) as finished:
        await trio.sleep(50)  # first sight: one read per account; connect triggers all in cooldown
        reads, writes = store.reads(), store.writes()
        assert reads == 50
        await trio.sleep(60 * 5)
        assert sched.ticks == 5
        assert (store.reads(), store.writes()) == (reads, writes) and finished == []


@pytest.mark.parametrize(("env", "expected"), [
    ({}, {"auto-backfill", "recent-sync"}),
    ({"RECENT_SYNC_ENABLED": "false"}, {"auto-backfill"}),
])
def test_recent_sync_flag_leaves_its_actor_out(tmp_path: Path, env: dict[str, str], expected: set[str]) -> None:
    settings: Settings = load_settings({"WADAEMON_DATA_DIR": str(tmp_path), "INSTANCE_ID": "i", **env})
    daemon = Daemon(settings, SqliteStore(tmp_path / "s.sqlite"), [], lambda a, _: None, serve=False)  # type: ignore[arg-type,return-value]
    names = {spec.name for spec in daemon._children()}
    assert names - {"accounts", "control", "ownership"} == expected


@pytest.mark.parametrize("flag", ["WHATSAPP_AUTO_BACKFILL_ENABLED", "AUTO_BACKFILL_ENABLED"])
async def test_auto_backfill_off_runs_nothing_by_itself_but_manual_still_works(
        clock: trio.testing.MockClock, store: CountingStore, tmp_path: Path, flag: str) -> None:
    settings = load_settings({"WADAEMON_DATA_DIR": str(tmp_path), flag: "false", "INSTANCE_ID": "me"})
    assert not settings.auto_backfill_enabled
    account = FakeAccount("a")
    sched = scheduler(store, FakeAccounts([account]), auto_backfill_enabled=False, auto_backfill_interval_ms=60_000)
    async with running(sched) as finished:
        await trio.sleep(3600)
        assert finished == [] and sched.ticks == 0  # no connect run, no periodic tick
        assert await sched.trigger_backfill("a") == "started"
        await finished.until(1)
