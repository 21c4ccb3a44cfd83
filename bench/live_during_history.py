"""Realtime latency while a large history sync ingests on the same account.

``python -m bench.live_during_history [--history 100000] [--rate 20] [--firestore]``: one
account pairs with ``--history`` messages of history (chunks of 500), and live messages arrive
at ``--rate`` per second while that history drains through the journal into the store. Prints
one table row: live-message latency (hand-over to acknowledged commit) p50/p99/max, and how
long the history took. SQLite by default; ``--firestore`` uses the emulator named by
``FIRESTORE_EMULATOR_HOST`` (``python -m bench`` starts one).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import trio

from bench.harness import emulator_store, quiet_logs
from bench.realtime import Stopwatch, TimedPhone, TimedStore, percentile
from tests.spine.harness import running, settings_for
from wadaemon.store.contract import Store
from wadaemon.store.sqlite import SqliteStore
from wadaemon.whatsapp.simphone import SimPhone


async def _run(store: Store, phone: TimedPhone, rate: float, duration: float, data: Path) -> float:
    started = time.perf_counter()
    async with running(settings_for(data), store, {phone.phone.account_id: phone}) as daemon:
        phone.phone.run_live(rate, duration, receipt_ratio=0.0, outbound_ratio=0.0)
        assert await trio.to_thread.run_sync(phone.phone.wait_idle, 900.0), "the phone never went idle"
        with trio.fail_after(900):
            for runtime in daemon.accounts.values():
                await runtime.wait_drained()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.live_during_history")
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=20.0, help="live messages per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of live traffic")
    parser.add_argument("--firestore", action="store_true")
    args = parser.parse_args()
    quiet_logs()
    watch = Stopwatch()
    with tempfile.TemporaryDirectory() as tmp:
        inner: Store = emulator_store() if args.firestore else SqliteStore(Path(tmp) / "store.sqlite")
        phone = TimedPhone(SimPhone("busy", seed=1, chats=500, history_messages=args.history, chunk_size=500), watch)
        seconds = trio.run(_run, TimedStore(inner, watch), phone, args.rate, args.duration, Path(tmp) / "data")
        inner.close()
    ms = [x * 1000 for x in watch.latencies["message"]]
    print(f"{'store':<10} {'history':>8} {'live msgs':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'total s':>8}")
    print(f"{'firestore' if args.firestore else 'sqlite':<10} {args.history:>8} {len(ms):>9} "
          f"{percentile(ms, 50):>8.1f} {percentile(ms, 99):>8.1f} {max(ms, default=float('nan')):>8.1f} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
