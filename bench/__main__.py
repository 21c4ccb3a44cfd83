"""``python -m bench`` (or ``make bench``): history-ingest throughput, writes per message, memory.

Side by side in one run, because these machines are noisy — quote the ratios:

* pipeline: a simulated pairing history through the real journal, translation and actors into
  the Firestore emulator (and into SQLite);
* raw ceiling: the stock client committing the same message documents, pre-built, in 500-write
  WriteBatches and nothing else;
* per-document ``set()``: what the replaced backend did (measured on a subset).

Writes are counted at commit (``WriteBatch.commit``). Peak RSS is read from /proc. Results go to
``bench/results/latest.json``. Realtime latency and the 200-account idle scale run are not here yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.firestore_emulator import FirestoreEmulator, _locate
from tests.spine.harness import running, settings_for, settle
from wadaemon.records import message_doc
from wadaemon.store.encoding import document_fields, escape_doc_id
from wadaemon.store.firestore import FirestoreStore
from wadaemon.store.sqlite import SqliteStore
from wadaemon.whatsapp.simphone import SimPhone
from wadaemon.whatsapp.translate import translate

ACCOUNT = "bench"
RESULTS = Path(__file__).parent / "results" / "latest.json"


class WriteCounter:
    """Counts writes at commit by wrapping the stock client's ``WriteBatch.commit``."""

    def __init__(self) -> None:
        from google.cloud.firestore_v1.batch import WriteBatch

        self.writes = 0
        self.commits = 0
        original = WriteBatch.commit
        counter = self

        def commit(batch: Any, *args: Any, **kwargs: Any) -> Any:
            counter.writes += len(batch._write_pbs)
            counter.commits += 1
            return original(batch, *args, **kwargs)

        WriteBatch.commit = commit  # type: ignore[method-assign]


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def phone(messages: int, chats: int) -> SimPhone:
    return SimPhone(ACCOUNT, seed=1, chats=chats, history_messages=messages, chunk_size=2000,
                    bootstrap_per_chat=5, recent_per_chat=20)


def prebuilt_docs(messages: int, chats: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The same message documents the pipeline writes, built outside the timed section."""
    out = []
    for raw in phone(messages, chats).pairing_history():
        for event in translate(ACCOUNT, raw):
            for conversation in getattr(event, "conversations", ()):
                for m in conversation.messages:
                    doc = message_doc(m, client_jid=conversation.chat.jid, sender_jid=m.sender.jid, synced_ms=0)
                    out.append((escape_doc_id(doc.thread_id), escape_doc_id(doc.id), document_fields(doc)))
    return out


async def pipeline(store: Any, messages: int, chats: int, data: Path) -> float:
    sim = phone(messages, chats)
    started = time.perf_counter()
    async with running(settings_for(data), store, {ACCOUNT: sim}) as daemon:
        await settle(daemon, [sim])
    return time.perf_counter() - started


def raw_batches(client: Any, docs: list[tuple[str, str, dict[str, Any]]], prefix: str) -> float:
    started = time.perf_counter()
    for start in range(0, len(docs), 500):
        batch = client.batch()
        for thread, mid, fields in docs[start:start + 500]:
            batch.set(client.collection(prefix).document(thread).collection("messages").document(mid), fields)
        batch.commit()
    return time.perf_counter() - started


def per_document_set(client: Any, docs: list[tuple[str, str, dict[str, Any]]], prefix: str) -> float:
    started = time.perf_counter()
    for thread, mid, fields in docs:
        client.collection(prefix).document(thread).collection("messages").document(mid).set(fields)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--chats", type=int, default=500)
    parser.add_argument("--set-subset", type=int, default=3000, help="documents for the set() baseline")
    parser.add_argument("--quick", action="store_true", help="20,000 messages over 100 chats")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.chats = 20_000, 100
    import logging

    logging.basicConfig(level=logging.WARNING)
    java, jar = _locate()
    emulator = FirestoreEmulator(java, jar, heap="2g")
    emulator.start()
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.hostport
    results: dict[str, Any] = {"messages": args.messages, "chats": args.chats}
    try:
        counter = WriteCounter()
        idle_kb = rss_kb("VmRSS")
        with tempfile.TemporaryDirectory() as tmp:
            store = FirestoreStore.from_settings(project=emulator.project, service_account_json=None,
                                                 credentials_path=None, emulator_host=emulator.hostport)
            seconds = trio.run(pipeline, store, args.messages, args.chats, Path(tmp) / "fs")
            results["pipeline_firestore_msgs_per_s"] = args.messages / seconds
            results["writes_per_message_history"] = counter.writes / args.messages
            results["commits"] = counter.commits
            results["peak_rss_delta_mb"] = (rss_kb("VmHWM") - idle_kb) / 1024
            docs = prebuilt_docs(args.messages, args.chats)
            client = store.client
            results["raw_batch_msgs_per_s"] = len(docs) / raw_batches(client, docs, "raw_threads")
            subset = docs[: args.set_subset]
            results["set_per_doc_msgs_per_s"] = len(subset) / per_document_set(client, subset, "set_threads")
            sqlite = SqliteStore(Path(tmp) / "bench.sqlite")
            seconds = trio.run(pipeline, sqlite, args.messages, args.chats, Path(tmp) / "sq")
            results["pipeline_sqlite_msgs_per_s"] = args.messages / seconds
            sqlite.close()
            store.close()
    finally:
        emulator.close()
    results["ratio_pipeline_to_raw"] = results["pipeline_firestore_msgs_per_s"] / results["raw_batch_msgs_per_s"]
    results["ratio_pipeline_to_set"] = results["pipeline_firestore_msgs_per_s"] / results["set_per_doc_msgs_per_s"]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        ("history ingest, pipeline -> Firestore emulator", f"{results['pipeline_firestore_msgs_per_s']:,.0f} msg/s"),
        ("raw ceiling: stock client, 500-write batches", f"{results['raw_batch_msgs_per_s']:,.0f} msg/s"),
        (f"one set() per message ({len(subset)} docs)", f"{results['set_per_doc_msgs_per_s']:,.0f} msg/s"),
        ("pipeline / raw ceiling", f"{results['ratio_pipeline_to_raw']:.2f}x  (target >= 1.0x)"),
        ("pipeline / set() per message", f"{results['ratio_pipeline_to_set']:.2f}x"),
        ("history ingest, pipeline -> SQLite", f"{results['pipeline_sqlite_msgs_per_s']:,.0f} msg/s"),
        ("store writes per message (history, at commit)", f"{results['writes_per_message_history']:.3f}  (target <= 1.05)"),
        ("peak RSS during Firestore ingest - idle", f"{results['peak_rss_delta_mb']:.0f} MB  (target <= 150)"),
    ]
    print(f"\nwadaemon bench: {args.messages:,} history messages over {args.chats} chats\n")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
