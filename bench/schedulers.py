"""Schedulers: what auto-backfill and recent-sync cost (``python -m bench.schedulers``).

* **Idle tick**: the auto-backfill scheduler over ``--accounts`` accounts, all inside their
  success cooldown, on trio's MockClock (an hour of ticks in a moment) with a counting SQLite
  store: store reads and writes per tick once every account was seen (first sight reads each
  account document once), and CPU per tick.
* **Backfill throughput**: the real daemon (journal, on-demand step, store) against a simulated
  phone with a shallow pairing history, one manual backfill: messages stored per second from
  on-demand answers and requests per gained message (the ideal is 1 per 50: WhatsApp's cap per
  answer), on SQLite and on the Firestore emulator.
* **Recent-sync without a gap**: a tick over connected accounts with no gap: history requests
  made (must be 0).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio.testing

from bench.harness import cpu_seconds, emit, emulator_store, quiet_logs
from tests.schedulers.fakes import BASE_MS, CountingStore, FakeAccount, FakeAccounts, scheduler
from tests.spine.harness import running, settings_for, settle
from wadaemon.domain import AccountDoc, AutoBackfillStatus, ms_to_datetime
from wadaemon.store.contract import Store
from wadaemon.store.sqlite import SqliteStore
from wadaemon.whatsapp.simphone import SimPhone


def idle_tick(accounts: int, ticks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = CountingStore(Path(tmp) / "store.sqlite")
        fakes = [FakeAccount(f"acct-{i:03d}") for i in range(accounts)]
        for fake in fakes:
            store.update_account(fake.account_id, AccountDoc(
                last_auto_backfill_success_at=ms_to_datetime(BASE_MS), last_auto_backfill_at=ms_to_datetime(BASE_MS)))
        sched = scheduler(store, FakeAccounts(fakes), auto_backfill_interval_ms=60_000,
                          auto_backfill_cooldown_ms=3_600_000)
        out: dict[str, Any] = {}

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(sched.run)
                await trio.sleep(45)  # first sight and every connect trigger (all in cooldown)
                out["first_sight_reads"] = store.reads()
                reads, writes, cpu = store.reads(), store.writes(), cpu_seconds()
                await trio.sleep(60 * ticks + 1)
                out["ticks"] = sched.ticks
                out["reads_per_tick"] = (store.reads() - reads) / sched.ticks
                out["writes_per_tick"] = (store.writes() - writes) / sched.ticks
                out["cpu_ms_per_tick"] = (cpu_seconds() - cpu) * 1000 / sched.ticks
                nursery.cancel_scope.cancel()

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        store.close()
    out["accounts"] = accounts
    return out


async def _backfill(store: Store, data: Path, threads: int) -> dict[str, Any]:
    phone = SimPhone("bf", seed=4, chats=threads, history_messages=20 * threads, archive_depth=600,
                     bootstrap_per_chat=10, recent_per_chat=10)
    env = {"WHATSAPP_BACKFILL_COUNT": "500", "WHATSAPP_BACKFILL_THREADS": str(threads),
           "WHATSAPP_BACKFILL_MESSAGES_PER_THREAD": "50", "WHATSAPP_HISTORY_REQUEST_PACE_MS": "0",
           "RECENT_SYNC_INTERVAL_MS": "3600000"}
    async with running(settings_for(data, **env), store, {"bf": phone}) as daemon:
        await settle(daemon, [phone])
        done = trio.Event()
        final: list[AutoBackfillStatus] = []

        def finished(_account_id: str, status: AutoBackfillStatus) -> None:
            final.append(status)
            done.set()

        daemon.auto_backfill.on_finished = finished
        started = time.perf_counter()
        assert await daemon.auto_backfill.trigger_backfill("bf") == "started"
        with trio.fail_after(600):
            await done.wait()
        seconds = time.perf_counter() - started
        requests = daemon.board.account("bf").history_requests_sent
        # Recent-sync over the same (gap-free: first start) account: no request.
        before = requests
        await daemon.recent_sync.tick()
        no_gap_requests = daemon.board.account("bf").history_requests_sent - before
    status = final[0]
    messages = status.messages or 0
    return {"threads": threads, "messages": messages, "seconds": seconds, "msgs_per_s": messages / seconds,
            "requests": requests, "requests_per_message": requests / max(messages, 1),
            "recent_sync_no_gap_requests": no_gap_requests}


def backfill(backend: str, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store: Store = emulator_store() if backend == "firestore" else SqliteStore(Path(tmp) / "store.sqlite")
        result = trio.run(_backfill, store, Path(tmp), threads)
        store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.schedulers")
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--firestore", action="store_true", help="also backfill into the emulator")
    args = parser.parse_args()
    quiet_logs()
    out: dict[str, Any] = {"idle_tick": idle_tick(args.accounts, args.ticks),
                           "backfill_sqlite": backfill("sqlite", args.threads)}
    if args.firestore:
        out["backfill_firestore"] = backfill("firestore", args.threads)
    emit(out)


if __name__ == "__main__":
    main()
