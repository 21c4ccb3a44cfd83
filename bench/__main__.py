"""``python -m bench`` (or ``make bench``): wadaemon's speed and memory, side by side in one run.

These machines are noisy, so every figure that has a target is a ratio or a bound measured in
this run, never a number remembered from another. Sections (all by default):

* ingest: a simulated pairing history through the real journal, translation and actors into
  the Firestore emulator, against (a) the raw ceiling, the stock client committing the same
  message documents pre-built in 500-write WriteBatches (best of two runs bracketing the
  pipeline's), (b) one ``set()`` per message, and (c) the store adapter alone on the same
  pre-built documents (what the pipeline's store stage can do at most); SQLite pipeline
  against its adapter alone; writes per message counted at commit; peak RSS of 20k and of 100k messages, each in
  a fresh process.
* realtime: 50 accounts, 200 messages/s in all, receipts flowing: latency from hand-over to
  acknowledged commit, and writes per message; plus one busy account at 200 messages/s.
* scale: 200 paired accounts idle in one instance: CPU and RSS per account.
* leases: three instances sharing 200 accounts on the emulator: store writes per account-hour
  for ownership leases and heartbeats (``bench/leases.py``), scaled to the default timing.
* http: the API's threads list and a 50-message page at 50 concurrent clients (aiohttp, another
  process, loopback) while the daemon ingests live traffic, 500 threads / 100k messages, on
  SQLite and on the emulator: requests per second and p99 (target <= 50 ms on SQLite); SQLite
  also with every read in a worker thread (no local reader), the ratio beside it.
* adopt: a generated legacy database (``tests.legacy.generator``) adopted, scanning alone (the
  dry run) against scanning + fixing: documents scanned per second, writes per fixed
  document, peak RSS.
* schedulers: an auto-backfill tick over 200 accounts inside their cooldown (store reads and
  writes per tick), backfill throughput from on-demand answers and requests per gained
  message (SQLite and Firestore), recent-sync requests with no gap.

Results: a table on stdout and ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import ROOT, emulator_store, run_child, start_emulator
from bench.ingest import per_document_set, prebuilt_docs, raw_batches
from tests.firestore_emulator import FirestoreEmulator
from wadaemon.domain import MessageDoc
from wadaemon.store.contract import Store
from wadaemon.store.encoding import document_from_fields
from wadaemon.store.sqlite import SqliteStore

RESULTS = ROOT / "bench" / "results" / "latest.json"


def ingest(emulator: FirestoreEmulator, messages: int, chats: int, set_subset: int, small: int) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": messages, "chats": chats}
    docs = prebuilt_docs(messages, chats)
    client = emulator_store().client
    raw_batches(client, docs[:10_000], "warmup")  # the emulator's JIT warms up before anything is timed
    emulator.reset()
    ceilings = [len(docs) / raw_batches(client, docs, "raw_before")]
    emulator.reset()
    out["firestore"] = run_child("bench.ingest", "--backend", "firestore", "--messages", str(messages), "--chats", str(chats))
    emulator.reset()
    ceilings.append(len(docs) / raw_batches(client, docs, "raw_after"))
    emulator.reset()
    out["raw_ceiling_runs"] = ceilings
    out["raw_ceiling"] = max(ceilings)
    out["firestore_adapter"] = _adapter(emulator_store(), docs)
    emulator.reset()
    out["set_per_doc"] = set_subset / per_document_set(client, docs[:set_subset], "set_threads")
    out["set_subset"] = set_subset
    emulator.reset()
    # Same chats, a fifth of the history: what grows with history size alone.
    out["firestore_small"] = run_child("bench.ingest", "--backend", "firestore", "--messages", str(small), "--chats", str(chats))
    emulator.reset()
    out["sqlite"] = run_child("bench.ingest", "--backend", "sqlite", "--messages", str(messages), "--chats", str(chats))
    with tempfile.TemporaryDirectory() as tmp:
        out["sqlite_adapter"] = _adapter(SqliteStore(Path(tmp) / "adapter.sqlite"), docs)
    return out


def _adapter(store: Store, docs: list[tuple[str, str, dict[str, Any]]]) -> float:
    """A store adapter alone, no pipeline: the pre-built documents, 2,000 per
    ``upsert_messages`` call (a history chunk's worth)."""
    models = [document_from_fields(fields, MessageDoc) for _, _, fields in docs]
    started = time.perf_counter()
    for start in range(0, len(models), 2000):
        store.upsert_messages(models[start:start + 2000])
    seconds = time.perf_counter() - started
    store.close()
    return len(models) / seconds


@contextlib.contextmanager
def fresh_emulator() -> Iterator[FirestoreEmulator]:
    emulator = start_emulator()
    try:
        yield emulator
    finally:
        emulator.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="section", help="ingest, realtime, scale (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller and shorter (about two minutes)")
    args = parser.parse_args()
    known = ("ingest", "realtime", "scale", "http", "leases", "adopt", "schedulers")
    if unknown := set(args.sections) - set(known):
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(known)}")
    sections = args.sections or list(known)
    q = args.quick
    results: dict[str, Any] = {"quick": q, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    # A fresh emulator per section: one that had held a few hundred thousand (since deleted)
    # documents answered much more slowly (200 accounts took 43 s to start instead of 2.5 s).
    if "ingest" in sections:
        with fresh_emulator() as emulator:
            results["ingest"] = ingest(emulator, 20_000 if q else 100_000, 100 if q else 500, 1000 if q else 3000,
                                       5_000 if q else 20_000)
    if "realtime" in sections:
        with fresh_emulator():
            results["realtime"] = run_child("bench.realtime", "--accounts", "50", "--rate", "200",
                                            "--duration", "20" if q else "60")
        with fresh_emulator():
            results["realtime_busy"] = run_child("bench.realtime", "--accounts", "1", "--rate", "200",
                                                 "--duration", "10" if q else "20")
    if "scale" in sections:
        with fresh_emulator():
            results["scale"] = run_child("bench.scale", "--accounts", "200", "--idle", "10" if q else "30")
    if "leases" in sections:
        with fresh_emulator():
            results["leases"] = run_child("bench.leases", "--accounts", "200", "--instances", "3",
                                          "--seconds", "10" if q else "30")
    if "http" in sections:
        size = ["--messages", "20000", "--duration", "5"] if q else []
        results["http_sqlite"] = run_child("bench.http_api", "--backend", "sqlite", *size)
        results["http_sqlite_worker_reads"] = run_child("bench.http_api", "--backend", "sqlite", "--reads", "worker", *size)
        with fresh_emulator():
            results["http_firestore"] = run_child("bench.http_api", "--backend", "firestore", *size)
    if "adopt" in sections:
        size = ["--accounts", "3", "--threads", "30", "--messages", "20"] if q else []
        with fresh_emulator() as emulator:
            results["adopt_scan"] = run_child("bench.adopt", "--mode", "scan", *size)
            emulator.reset()
            results["adopt_apply"] = run_child("bench.adopt", "--mode", "apply", *size)
    if "schedulers" in sections:
        with fresh_emulator():
            results["schedulers"] = run_child("bench.schedulers", "--accounts", "200", "--ticks", "10",
                                              "--threads", "5" if q else "10", "--firestore")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return 0


def _mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def render(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    if "ingest" in r:
        i = r["ingest"]
        fs, small, sq = i["firestore"], i["firestore_small"], i["sqlite"]
        to_raw, to_set = fs["msgs_per_s"] / i["raw_ceiling"], fs["msgs_per_s"] / i["set_per_doc"]
        rows += [
            (f"history ingest {i['messages']:,} msgs / {i['chats']} chats: pipeline -> Firestore", f"{fs['msgs_per_s']:,.0f} msg/s", ""),
            ("  (a) raw ceiling: stock client, 500-write WriteBatches", f"{i['raw_ceiling']:,.0f} msg/s",
             "best of " + " / ".join(f"{x:,.0f}" for x in i["raw_ceiling_runs"])),
            (f"  (b) one set() per message ({i['set_subset']:,} docs)", f"{i['set_per_doc']:,.0f} msg/s", ""),
            ("  pipeline / raw ceiling", f"{to_raw:.2f}x", f">= 1.0x {_mark(to_raw >= 1.0)}; stretch 2x {_mark(to_raw >= 2.0)}"),
            ("  pipeline / set() per message", f"{to_set:.1f}x", ""),
            ("  (c) Firestore adapter alone, pre-built, 2,000 per call", f"{i['firestore_adapter']:,.0f} msg/s",
             f"{i['firestore_adapter'] / i['raw_ceiling']:.2f}x the raw ceiling; pipeline {fs['msgs_per_s'] / i['firestore_adapter']:.2f}x of it"),
            ("  pipeline CPU (this process) per message", f"{fs['cpu_s'] / fs['messages'] * 1e6:,.0f} us", ""),
            ("history ingest: pipeline -> SQLite", f"{sq['msgs_per_s']:,.0f} msg/s", ""),
            ("  SQLite adapter alone, pre-built, 2,000 per call", f"{i['sqlite_adapter']:,.0f} msg/s", ""),
            ("  pipeline / adapter alone", f"{sq['msgs_per_s'] / i['sqlite_adapter']:.2f}x", ""),
            ("store writes per message, history (at commit)", f"{fs['writes_per_message']:.3f}",
             f"<= 1.05 {_mark(fs['writes_per_message'] <= 1.05)}"),
            (f"peak RSS - idle, {fs['messages']:,} msgs (fresh process)", f"{fs['peak_rss_delta_mb']:.0f} MB",
             f"<= 150 MB {_mark(fs['peak_rss_delta_mb'] <= 150)}"),
            (f"peak RSS - idle, {small['messages']:,} msgs (fresh process)", f"{small['peak_rss_delta_mb']:.0f} MB",
             f"ratio {fs['peak_rss_delta_mb'] / max(small['peak_rss_delta_mb'], 1e-9):.2f} for {fs['messages'] / small['messages']:.0f}x the history"),
        ]
    if "realtime" in r:
        rt = r["realtime"]
        rows += [
            (f"realtime {rt['accounts']} accounts, {rt['rate']:.0f} msg/s, {rt['duration_s']:.0f} s: latency p50", f"{rt['p50_ms']:.0f} ms",
             f"{rt['messages']:,} msgs, {rt['receipts']:,} receipts, {rt['unacknowledged']} unacknowledged"),
            ("  p95", f"{rt['p95_ms']:.0f} ms", ""),
            ("  p99", f"{rt['p99_ms']:.0f} ms", f"<= 500 ms {_mark(rt['p99_ms'] <= 500)}"),
            ("  max / receipts p99", f"{rt['max_ms']:.0f} / {rt['receipt_p99_ms']:.0f} ms", ""),
            ("  store writes per message (msg + summaries + status)", f"{rt['writes_per_message']:.2f}",
             _writes_note(rt)),
            ("  process CPU", f"{rt['cpu_percent']:.0f} % of one core", ""),
        ]
    if "realtime_busy" in r:
        b = r["realtime_busy"]
        rows += [
            (f"realtime, one busy account at {b['rate']:.0f} msg/s: writes per message", f"{b['writes_per_message']:.2f}",
             f"<= 1.2 {_mark(b['writes_per_message'] <= 1.2)}; " + _writes_note(b)),
            ("  latency p99", f"{b['p99_ms']:.0f} ms", ""),
        ]
    if "leases" in r:
        le = r["leases"]
        w = le["writes_per_account_hour"]
        rows += [
            (f"lease upkeep, {le['accounts']} accounts over {le['instances']} instances (shares {le['shares']}):"
             " lease writes per account-hour", f"{w['lease']:,.0f}",
             f"retry period {le['default_retry_period_ms'] / 1000:.0f} s; one renewal commit per instance per period"),
            ("  heartbeat writes per account-hour", f"{w['heartbeat']:,.1f}", ""),
            ("  writes per account per second (all upkeep)", f"{le['writes_per_account_second']:.3f}",
             f"< 1 {_mark(le['writes_per_account_second'] < 1)}"),
            ("  commits per instance-hour", f"{le['commits_per_instance_hour']:,.0f}", ""),
        ]
    if "scale" in r:
        s = r["scale"]
        rows += [
            (f"{s['accounts']} idle accounts: CPU over {s['idle_s']:.0f} s", f"{s['idle_cpu_percent']:.2f} % of one core",
             f"< 5 % {_mark(s['idle_cpu_percent'] < 5)}"),
            ("  RSS per account", f"{s['rss_per_account_kb']:,.0f} KB",
             f"{s['rss_mb']:.0f} MB in all, started in {s['startup_s']:.1f} s"),
        ]
    for key in ("http_sqlite", "http_sqlite_worker_reads", "http_firestore"):
        if key in r:
            h = r[key]
            for phase, label in (("threads_list", "threads list, limit 50"), ("messages_page", "messages page, limit 50")):
                p = h[phase]
                if key == "http_sqlite_worker_reads":
                    local = r["http_sqlite"][phase]
                    rows += [(f"  {label}, every read in a worker thread, no kept pages", f"{p['req_per_s']:,.0f} req/s",
                              f"p99 {p['p99_ms']:.1f} ms, server CPU {p['server_cpu_ms_per_request']:.2f} ms/request; "
                              f"local reader: {local['req_per_s'] / p['req_per_s']:.2f}x the req/s, "
                              f"{local['server_cpu_ms_per_request'] / p['server_cpu_ms_per_request']:.2f}x the CPU")]
                    continue
                target = f"<= 50 ms {_mark(p['p99_ms'] <= 50)}" if h["backend"] == "sqlite" else ""
                rows += [
                    (f"HTTP {label}, {h['backend']}, {h['threads']} threads / {h['messages']:,} msgs, "
                     f"{h['clients']} clients, live {h['live_per_s']:.0f} msg/s", f"{p['req_per_s']:,.0f} req/s",
                     f"{p['requests']:,} requests, {p['errors']} errors"),
                    ("  p50 / p99", f"{p['p50_ms']:.1f} / {p['p99_ms']:.1f} ms", target),
                    ("  server CPU per request above idle", f"{p['server_cpu_ms_per_request']:.2f} ms", ""),
                ]
    if "adopt_scan" in r:
        scan, fix = r["adopt_scan"], r["adopt_apply"]
        rows += [
            (f"adopt {scan['accounts']} legacy accounts, {scan['documents']:,} docs: scan only (dry run)",
             f"{scan['docs_per_s']:,.0f} docs/s", f"{scan['reads']:,} reads"),
            ("  scan + fix (--apply)", f"{fix['docs_per_s']:,.0f} docs/s",
             f"{fix['docs_per_s'] / scan['docs_per_s']:.2f}x of scanning alone; {fix['fixes']:,} fixes"),
            ("  writes per fixed document", f"{fix['writes_per_fix']:.2f}", f"{fix['writes']:,} writes"),
            ("  peak RSS - before adoption", f"{fix['peak_rss_delta_mb']:.0f} MB",
             f"scan only {scan['peak_rss_delta_mb']:.0f} MB"),
        ]
    if "schedulers" in r:
        sc = r["schedulers"]
        t = sc["idle_tick"]
        rows.append((f"auto-backfill tick, {t['accounts']} accounts in cooldown: store reads / writes per tick",
                     f"{t['reads_per_tick']:.0f} / {t['writes_per_tick']:.0f}",
                     f"0 / 0 {_mark(t['reads_per_tick'] == 0 and t['writes_per_tick'] == 0)}; "
                     f"{t['first_sight_reads']} reads at first sight; {t['cpu_ms_per_tick']:.2f} ms CPU per tick"))
        for backend in ("sqlite", "firestore"):
            b = sc.get(f"backfill_{backend}")
            if b is None:
                continue
            rows += [
                (f"backfill from on-demand answers -> {backend} ({b['threads']} threads)", f"{b['msgs_per_s']:,.0f} msg/s",
                 f"{b['messages']:,} msgs in {b['seconds']:.1f} s"),
                ("  requests per gained message", f"{b['requests_per_message']:.3f}",
                 f"ideal 0.020 (1 per 50) {_mark(b['requests_per_message'] <= 0.0205)}; {b['requests']} requests"),
            ]
        rows.append(("recent-sync tick with no gap: history requests", f"{sc['backfill_sqlite']['recent_sync_no_gap_requests']}",
                     f"0 {_mark(sc['backfill_sqlite']['recent_sync_no_gap_requests'] == 0)}"))
    width = max(len(name) for name, _, _ in rows)
    vwidth = max(len(value) for _, value, _ in rows)
    lines = [f"wadaemon bench{' --quick' if r['quick'] else ''}, {r['when']}", ""]
    lines += [f"  {name:<{width}}  {value:>{vwidth}}  {note}".rstrip() for name, value, note in rows]
    return "\n".join(lines)


def _writes_note(rt: dict[str, Any]) -> str:
    w = rt["writes_by_kind"]
    created = max(w.get("message+", 0), 1)
    return (f"per message: summaries {w.get('thread', 0) / created:.2f}, status {w.get('account', 0) / created:.3f}; "
            f"receipt updates {rt['receipt_writes_per_receipt']:.2f} per receipt")


if __name__ == "__main__":
    raise SystemExit(main())
