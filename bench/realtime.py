"""Realtime: many accounts' live traffic at once; latency from hand-over to acknowledged commit,
and store writes per message.

``python -m bench.realtime`` (a child of ``python -m bench``): ``--accounts`` simulated phones,
already paired (no history), each sending its share of ``--rate`` messages per second for
``--duration`` seconds, with receipts for the messages the phones sent, into the emulator.

Latency of a message: from the moment the transport calls ``deliver`` (before the journal
append, so its fsync counts) to the return of the ``upsert_messages`` call that committed it.
Of a receipt: to the return of the ``apply_receipts`` call that applied it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from bench.harness import CommitCounter, cpu_seconds, emit, emulator_store, quiet_logs
from tests.spine.harness import running, settings_for, settle
from wadaemon.domain import MessageDoc, MessageEvent, ReceiptEvent, ReceiptUpdate
from wadaemon.store.contract import Store
from wadaemon.whatsapp.simphone import SimPhone
from wadaemon.whatsapp.translate import translate
from wadaemon.whatsapp.transport import RawEvent, RawEventSink


class Stopwatch:
    """Hand-over times by key, and the latencies of the keys acknowledged since."""

    def __init__(self) -> None:
        self.handed: dict[tuple[str, str], float] = {}
        self.latencies: dict[str, list[float]] = {"message": [], "receipt": []}
        self._lock = threading.Lock()

    def start(self, kind: str, key: str, at: float) -> None:
        with self._lock:
            self.handed.setdefault((kind, key), at)

    def stop(self, kind: str, keys: Sequence[str]) -> None:
        now = time.perf_counter()
        with self._lock:
            for key in keys:
                began = self.handed.pop((kind, key), None)
                if began is not None:
                    self.latencies[kind].append(now - began)


class TimedSink:
    """Wraps the daemon's sink: notes when each message or receipt is handed over."""

    def __init__(self, account_id: str, inner: RawEventSink, watch: Stopwatch) -> None:
        self._account_id = account_id
        self._inner = inner
        self._watch = watch

    def deliver(self, event: RawEvent) -> None:
        at = time.perf_counter()
        for domain in translate(self._account_id, event):
            if isinstance(domain, MessageEvent):
                self._watch.start("message", domain.message_id, at)
            elif isinstance(domain, ReceiptEvent):
                for message_id in domain.message_ids:
                    self._watch.start("receipt", message_id, at)
        self._inner.deliver(event)


class TimedPhone:
    """A SimPhone whose deliveries are timed (everything else is the phone's)."""

    def __init__(self, phone: SimPhone, watch: Stopwatch) -> None:
        self.phone = phone
        self.watch = watch

    def start(self, sink: RawEventSink) -> None:
        self.phone.start(TimedSink(self.phone.account_id, sink, self.watch))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.phone, name)


class TimedStore:
    """Wraps the store: notes when messages and receipts are acknowledged."""

    def __init__(self, inner: Store, watch: Stopwatch) -> None:
        self._inner = inner
        self._watch = watch

    def upsert_messages(self, docs: Sequence[MessageDoc]) -> Any:
        result = self._inner.upsert_messages(docs)
        self._watch.stop("message", [doc.id for doc in docs])
        return result

    def apply_receipts(self, receipts: Sequence[ReceiptUpdate]) -> list[ReceiptUpdate]:
        missing = self._inner.apply_receipts(receipts)
        held = {(r.thread_id, r.message_id) for r in missing}
        self._watch.stop("receipt", [r.message_id for r in receipts if (r.thread_id, r.message_id) not in held])
        return missing

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


async def _run(store: Store, phones: list[TimedPhone], rate_each: float, duration: float, zipf_s: float,
               receipt_ratio: float, data: Path) -> int:
    async with running(settings_for(data), store, {p.phone.account_id: p for p in phones}) as daemon:
        await settle(daemon, [p.phone for p in phones])
        events = sum(p.phone.run_live(rate_each, duration, receipt_ratio=receipt_ratio, zipf_s=zipf_s) for p in phones)
        await settle(daemon, [p.phone for p in phones])
    return events


def measure(accounts: int, rate: float, duration: float, chats: int, zipf_s: float, receipt_ratio: float) -> dict[str, Any]:
    counter = CommitCounter()
    watch = Stopwatch()
    store = emulator_store()
    store.ping()
    # run_live's rate counts events; receipts are a share of them, messages the rest.
    rate_each = rate / (1 - receipt_ratio) / accounts
    phones = [TimedPhone(SimPhone(f"rt{i:03d}", seed=i, chats=chats, history_messages=0, paired=True), watch)
              for i in range(accounts)]
    with tempfile.TemporaryDirectory() as tmp:
        writes0 = counter.writes.copy()
        cpu0, started = cpu_seconds(), time.perf_counter()
        events = trio.run(_run, TimedStore(store, watch), phones, rate_each, duration, zipf_s, receipt_ratio, Path(tmp))
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    store.close()
    writes = counter.writes - writes0
    messages, receipts = watch.latencies["message"], watch.latencies["receipt"]
    ms = [x * 1000 for x in messages]
    created = writes["message+"]
    return {
        "accounts": accounts, "rate": rate, "duration_s": duration, "chats_per_account": chats, "zipf_s": zipf_s,
        "events": events, "messages": len(messages), "receipts": len(receipts),
        "unacknowledged": len(watch.handed),
        "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
        "max_ms": max(ms, default=float("nan")),
        "receipt_p99_ms": percentile([x * 1000 for x in receipts], 99),
        "writes_by_kind": dict(writes),
        # Per stored message: its own document, thread summaries and account status.
        "writes_per_message": (created + writes["thread"] + writes["account"]) / max(created, 1),
        "receipt_writes_per_receipt": writes["message"] / max(len(receipts), 1),
        "cpu_percent": 100 * cpu / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.realtime")
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200, help="messages per second, all accounts together")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--chats", type=int, default=30, help="chats per account")
    parser.add_argument("--zipf", type=float, default=1.0, help="chat popularity exponent (0: uniform)")
    parser.add_argument("--receipt-ratio", type=float, default=0.1)
    args = parser.parse_args()
    quiet_logs()
    emit(measure(args.accounts, args.rate, args.duration, args.chats, args.zipf, args.receipt_ratio))


if __name__ == "__main__":
    main()
