"""History ingest: a simulated pairing history through the real journal, translation and actors,
against two baselines writing the same message documents with the stock client.

Run by ``python -m bench``; ``python -m bench.ingest --backend firestore|sqlite`` is the child
that measures one pipeline run in a fresh interpreter (throughput, writes, peak RSS).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.harness import CommitCounter, cpu_seconds, emit, emulator_store, quiet_logs, rss_kb
from tests.spine.harness import running, settings_for, settle
from wadaemon.records import message_doc
from wadaemon.store.contract import Store
from wadaemon.store.encoding import document_fields, escape_doc_id
from wadaemon.store.sqlite import SqliteStore
from wadaemon.whatsapp.simphone import SimPhone
from wadaemon.whatsapp.translate import translate

ACCOUNT = "bench"

Doc = tuple[str, str, dict[str, Any]]


def history_phone(messages: int, chats: int) -> SimPhone:
    return SimPhone(ACCOUNT, seed=1, chats=chats, history_messages=messages, chunk_size=2000,
                    bootstrap_per_chat=5, recent_per_chat=20)


def prebuilt_docs(messages: int, chats: int) -> list[Doc]:
    """The message documents the pipeline writes (same ids, same fields), built outside any
    timed section: the baselines time committing and nothing else."""
    out = []
    for raw in history_phone(messages, chats).pairing_history():
        for event in translate(ACCOUNT, raw):
            for conversation in getattr(event, "conversations", ()):
                for m in conversation.messages:
                    doc = message_doc(m, client_jid=conversation.chat.jid, sender_jid=m.sender.jid, synced_ms=0)
                    out.append((escape_doc_id(doc.thread_id), escape_doc_id(doc.id), document_fields(doc)))
    return out


def raw_batches(client: Any, docs: list[Doc], collection: str) -> float:
    """Baseline (a), the raw ceiling: 500-write ``WriteBatch``es of pre-built documents."""
    started = time.perf_counter()
    for start in range(0, len(docs), 500):
        batch = client.batch()
        for thread, mid, fields in docs[start:start + 500]:
            batch.set(client.collection(collection).document(thread).collection("messages").document(mid), fields)
        batch.commit()
    return time.perf_counter() - started


def per_document_set(client: Any, docs: list[Doc], collection: str) -> float:
    """Baseline (b): one ``set()`` per message, what the replaced backend did."""
    started = time.perf_counter()
    for thread, mid, fields in docs:
        client.collection(collection).document(thread).collection("messages").document(mid).set(fields)
    return time.perf_counter() - started


async def _pipeline(store: Store, phone: SimPhone, data: Path) -> float:
    """From the daemon's start to the last history entry settled (the store warmed up before)."""
    started = time.perf_counter()
    async with running(settings_for(data), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
    return time.perf_counter() - started


def measure_pipeline(backend: str, messages: int, chats: int) -> dict[str, Any]:
    """One pipeline run in this (fresh) process: throughput, writes at commit, peak RSS."""
    counter = CommitCounter() if backend == "firestore" else None
    with tempfile.TemporaryDirectory() as tmp:
        store: Store = emulator_store() if backend == "firestore" else SqliteStore(Path(tmp) / "store.sqlite")
        store.ping()  # channel open, emulator answering: start-up is not what is measured
        phone = history_phone(messages, chats)
        idle_kb, cpu0 = rss_kb("VmRSS"), cpu_seconds()
        seconds = trio.run(_pipeline, store, phone, Path(tmp) / "data")
        result: dict[str, Any] = {
            "backend": backend, "messages": messages, "chats": chats, "seconds": seconds,
            "msgs_per_s": messages / seconds, "cpu_s": cpu_seconds() - cpu0,
            "idle_rss_mb": idle_kb / 1024, "peak_rss_delta_mb": (rss_kb("VmHWM") - idle_kb) / 1024,
        }
        if counter is not None:
            result.update(writes=counter.total(), commits=counter.commits, refused_writes=counter.refused_writes,
                          writes_per_message=counter.total() / messages, writes_by_kind=dict(counter.writes))
        store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest")
    parser.add_argument("--backend", choices=("firestore", "sqlite"), required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--chats", type=int, required=True)
    args = parser.parse_args()
    quiet_logs()
    emit(measure_pipeline(args.backend, args.messages, args.chats))


if __name__ == "__main__":
    main()
