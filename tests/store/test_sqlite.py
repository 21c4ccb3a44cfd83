"""SQLite-only checks: the file mirrors the Firestore layout (a reader sees SPEC §1 field names),
pragmas, error mapping, use from several threads, durability across reopen. The behaviour
shared with Firestore lives in the contract suite (``test_contract.py``)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.store.builders import ACCOUNT, PEER, T0, message, summary, tid
from wadaemon.domain import AccountDoc, HistorySyncResult, ms_to_datetime
from wadaemon.store.contract import StoreError, StoreUnavailable
from wadaemon.store.encoding import escape_doc_id
from wadaemon.store.sqlite import SqliteStore


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "wadaemon.sqlite"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(path, busy_timeout=0.2)
    try:
        yield opened
    finally:
        opened.close()


def raw(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_wal_and_synchronous_normal(store: SqliteStore, path: Path) -> None:
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    assert store._conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


def test_documents_are_firestore_shaped_json(store: SqliteStore, path: Path) -> None:
    store.upsert_messages([message("m1", ts_ms=T0 + 123, quoted_message_id="q0")])
    store.advance_threads([summary(T0 + 123, phone_e164="+40711111111")])
    store.update_account(ACCOUNT, AccountDoc(state="connected", last_history_sync_result=HistorySyncResult(saved=2)))

    [(thread_id, message_id, ts_ms, doc)] = raw(path, "SELECT thread_id, id, ts_client_ms, doc FROM messages")
    assert (thread_id, message_id, ts_ms) == (tid(), "m1", T0 + 123)
    fields = json.loads(str(doc))
    assert fields["tsClientMs"] == T0 + 123
    assert datetime.fromisoformat(fields["tsClient"]) == ms_to_datetime(T0 + 123)  # RFC 3339 string
    assert fields["threadId"] == tid() and fields["quotedMessageId"] == "q0" and fields["syncSource"] == "realtime"
    assert "editedAt" not in fields  # None means absent, as in Firestore

    [(key, account_id, last_ms, tdoc)] = raw(path, "SELECT id, account_id, last_message_at_ms, doc FROM threads")
    assert (key, account_id, last_ms) == (tid(), ACCOUNT, T0 + 123)
    tfields = json.loads(str(tdoc))
    assert (tfields["clientJid"], tfields["lastMessageAtMs"], tfields["phoneE164"]) == (PEER, T0 + 123, "+40711111111")

    [(adoc,)] = raw(path, "SELECT doc FROM accounts WHERE id = ?", ACCOUNT)
    afields = json.loads(str(adoc))
    assert afields["state"] == "connected"
    assert afields["lastHistorySyncResult"] == {"saved": 2, "skipped": 0, "errors": 0, "total": 0, "dryRun": False}
    assert "updatedAt" in afields


def test_lock_documents_mirror_firestore_collections(store: SqliteStore, path: Path) -> None:
    store.acquire_lease("account", ACCOUNT, "inst-a", ttl_ms=1_000, now_ms=T0)
    store.acquire_lease("backfill", ACCOUNT, "inst-a", ttl_ms=2_000, now_ms=T0)
    rows = {str(c): json.loads(str(d)) for c, _, d in raw(path, "SELECT collection, id, doc FROM leases")}
    account_lease, backfill_lock = rows["whatsapp_account_leases"], rows["whatsapp_backfill_locks"]
    assert (account_lease["ownerId"], account_lease["expiresAtMs"]) == ("inst-a", T0 + 1_000)
    assert datetime.fromisoformat(account_lease.pop("acquiredAt")) == ms_to_datetime(T0)
    assert (backfill_lock["ownerId"], backfill_lock["expiresAtMs"]) == ("inst-a", T0 + 2_000)
    assert datetime.fromisoformat(backfill_lock.pop("startedAt")) == ms_to_datetime(T0)
    assert account_lease.pop("epoch") == 1  # the fencing epoch: account leases only
    assert sorted(account_lease) == sorted(backfill_lock) == ["expiresAtMs", "ownerId"]


def test_ids_are_stored_escaped(store: SqliteStore, path: Path) -> None:
    jid = "a/b@s.whatsapp.net"
    store.upsert_messages([message("x/y", client_jid=jid)])
    assert raw(path, "SELECT thread_id, id FROM messages") == [(escape_doc_id(tid(jid)), "x%2Fy")]


def test_data_survives_reopen(store: SqliteStore, path: Path) -> None:
    store.upsert_messages([message("m1")])
    store.close()
    reopened = SqliteStore(path)
    try:
        assert reopened.get_message(tid(), "m1") is not None
    finally:
        reopened.close()


def test_write_lock_held_elsewhere_is_unavailable(store: SqliteStore, path: Path) -> None:
    """Another process holding the write lock past the busy timeout is an outage (retry), not a bug."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            store.upsert_messages([message("m1")])
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert store.upsert_messages([message("m1")]).written == 1  # nothing half-done was left behind


def test_undecodable_document_is_a_store_error(store: SqliteStore, path: Path) -> None:
    store.upsert_messages([message("m1")])
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE messages SET doc = ?", ('{"id": 5}',))
    conn.close()
    with pytest.raises(StoreError) as caught:
        store.get_message(tid(), "m1")
    assert not isinstance(caught.value, StoreUnavailable)


def test_closed_store_pings_false_and_refuses_calls(store: SqliteStore) -> None:
    assert store.ping() is True
    store.close()
    store.close()  # idempotent
    assert store.ping() is False
    with pytest.raises(StoreError):
        store.get_thread(tid())


def test_concurrent_threads_share_the_store(store: SqliteStore) -> None:
    """StoreRunner calls from several worker threads at once; every write lands."""
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            account = f"acct-{n}"
            for i in range(20):
                store.upsert_messages([message(f"m{i}", account_id=account, ts_ms=T0 + i)])
                store.advance_threads([summary(T0 + i, account_id=account)])
                store.list_threads(account, limit=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    for n in range(6):
        assert len(store.list_messages(tid(account_id=f"acct-{n}"), limit=100)) == 20


def test_concurrent_lease_acquisition_has_one_winner(path: Path) -> None:
    """Two stores on one file (two processes, in effect) racing for an absent lease."""
    stores = [SqliteStore(path) for _ in range(4)]
    try:
        winners: list[str] = []
        barrier = threading.Barrier(len(stores))

        def contend(n: int) -> None:
            barrier.wait()
            if stores[n].acquire_lease("account", ACCOUNT, f"inst-{n}", ttl_ms=60_000, now_ms=T0) is not None:
                winners.append(f"inst-{n}")

        workers = [threading.Thread(target=contend, args=(n,)) for n in range(len(stores))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert len(winners) == 1
        lease = stores[0].read_lease("account", ACCOUNT)
        assert lease is not None and lease.owner_id == winners[0]
    finally:
        for opened in stores:
            opened.close()
