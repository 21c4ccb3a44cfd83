"""Firestore-only checks: the exact SPEC §1 layout in raw documents, id escaping, commit sizes,
compare-and-swap leases under contention, outage behaviour. The shared behaviour of both
adapters lives in the contract suite (``test_contract.py``)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from tests.firestore_emulator import (
    INSTALL_HINT,
    FirestoreEmulator,
    _locate,
    close_client,
    emulator_client,
)
from wadaemon.domain import (
    AccountDoc,
    AutoBackfillStatus,
    HistorySyncResult,
    Lease,
    MessageDoc,
    MessageMutation,
    ReceiptUpdate,
    ThreadSummary,
    ms_to_datetime,
    thread_id_for,
)
from wadaemon.store.contract import StoreError, StoreUnavailable
from wadaemon.store.firestore import FirestoreStore

pytestmark = pytest.mark.firestore

ACC = "acc1"
JID = "40712345678@s.whatsapp.net"
TID = thread_id_for(ACC, JID)
T0 = 1_700_000_000_123


def message(mid: str, *, thread_id: str = TID, ts_ms: int = T0, body: str = "hello", **kw: Any) -> MessageDoc:
    account_id, client_jid = thread_id.split("__", 1)
    return MessageDoc(
        id=mid, wa_message_id=mid, account_id=account_id, client_jid=client_jid, thread_id=thread_id,
        direction=kw.pop("direction", "inbound"), sender_jid=client_jid, ts_client=ms_to_datetime(ts_ms),
        ts_client_ms=ts_ms, body=body, **kw,
    )


@pytest.fixture
def raw(firestore_emulator: FirestoreEmulator, firestore_store: FirestoreStore) -> Iterator[Any]:
    """The raw google-cloud-firestore client (the fixture order guarantees a reset emulator)."""
    client = emulator_client(firestore_emulator)
    yield client
    close_client(client)


def test_client_only_ever_talks_to_the_emulator(firestore_emulator: FirestoreEmulator, firestore_store: FirestoreStore) -> None:
    assert os.environ["FIRESTORE_EMULATOR_HOST"] == firestore_emulator.hostport
    assert firestore_store.client._emulator_host == firestore_emulator.hostport
    assert firestore_store.backend == "firestore"
    assert firestore_store.ping() is True


def test_message_and_thread_layout(firestore_store: FirestoreStore, raw: Any) -> None:
    firestore_store.upsert_messages([message("M1", sender_name="Ana", quoted_message_id="Q0")])
    firestore_store.advance_threads([ThreadSummary(
        account_id=ACC, client_jid=JID, display_name="Ana", last_message_ms=T0, last_message_preview="hello",
        last_message_direction="inbound", last_inbound_ms=T0, phone_e164="+40712345678",
    )])

    thread = raw.collection("threads").document(f"{ACC}__{JID}").get()
    assert thread.exists
    t = thread.to_dict()
    assert set(t) == {
        "accountId", "clientJid", "displayName", "lastMessageAt", "lastMessageAtMs", "lastMessagePreview",
        "lastMessageText", "isGroup", "aliasJids", "lastMessageDirection", "lastInboundAt", "lastInboundAtMs",
        "phoneE164", "normalizedPhone", "updatedAt",
    }
    assert t["accountId"] == ACC and t["clientJid"] == JID and t["displayName"] == "Ana"
    assert isinstance(t["lastMessageAt"], datetime) and t["lastMessageAtMs"] == T0
    assert t["lastMessageAt"] == ms_to_datetime(T0)
    assert t["lastMessageDirection"] == "inbound" and t["phoneE164"] == "+40712345678"
    assert t["normalizedPhone"] == "+40712345678" and t["lastMessageText"] == "hello"
    assert t["isGroup"] is False and t["aliasJids"] == []

    snap = raw.collection("threads").document(f"{ACC}__{JID}").collection("messages").document("M1").get()
    assert snap.exists
    m = snap.to_dict()
    assert {
        "id", "waMessageId", "accountId", "clientJid", "threadId", "direction", "senderJid", "senderName", "body",
        "messageType", "status", "tsClient", "tsClientMs", "tsServer", "createdAt", "updatedAt", "syncSource",
        "quotedMessageId",
    } == set(m)
    assert m["threadId"] == TID and m["waMessageId"] == "M1" and m["senderName"] == "Ana"
    # tsClient is a real Timestamp (never a string), at millisecond precision.
    assert isinstance(m["tsClient"], datetime) and not isinstance(m["tsClient"], str)
    assert m["tsClient"] == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert m["tsClientMs"] == T0
    for stamp in ("tsServer", "createdAt", "updatedAt"):
        assert isinstance(m[stamp], datetime)
    assert not any("_" in key for key in m), "field names are camelCase"


def test_replay_round_trips_to_an_equal_document(firestore_store: FirestoreStore) -> None:
    doc = message("M1", delivered_at=datetime(2024, 5, 1, 12, 0, 0, 5000, tzinfo=UTC), reactions={"a@s.whatsapp.net": "x"})
    assert firestore_store.upsert_messages([doc]).written == 1
    stored = firestore_store.get_message(TID, "M1")
    assert stored is not None and type(stored.ts_client) is datetime
    again = firestore_store.upsert_messages([doc])
    assert (again.written, again.unchanged, again.commits) == (0, 1, 0)


def test_account_fields_patch_whole_and_keep_siblings(firestore_store: FirestoreStore, raw: Any) -> None:
    firestore_store.update_account(ACC, AccountDoc(
        state="connected", phone_jid=JID, history_sync_count=2,
        last_history_sync_result=HistorySyncResult(saved=3, skipped=1, errors=0, total=4),
        last_auto_backfill_status=AutoBackfillStatus(running=True, started_at=ms_to_datetime(T0), trigger="connect", holder="i1"),
    ))
    ref = raw.collection("accounts").document(ACC)
    ref.update({"flutterOnly": "keep me"})  # a field another tool writes
    firestore_store.update_account(ACC, AccountDoc(
        last_auto_backfill_status=AutoBackfillStatus(running=False, ok=True, threads=1, messages=2, errors=0, duration_ms=5),
    ))
    a = ref.get().to_dict()
    assert a["state"] == "connected" and a["phoneJid"] == JID and a["historySyncCount"] == 2
    assert a["lastHistorySyncResult"] == {"saved": 3, "skipped": 1, "errors": 0, "total": 4, "dryRun": False}
    # replaced whole: no startedAt/trigger/holder left over from the running status
    assert a["lastAutoBackfillStatus"] == {"running": False, "ok": True, "threads": 1, "messages": 2, "errors": 0, "durationMs": 5}
    assert a["flutterOnly"] == "keep me"
    assert isinstance(a["updatedAt"], datetime)
    assert firestore_store.list_account_ids() == [ACC]


def test_unknown_fields_survive_and_maps_are_replaced(firestore_store: FirestoreStore, raw: Any) -> None:
    firestore_store.upsert_messages([message("M1")])
    ref = raw.collection("threads").document(TID).collection("messages").document("M1")
    ref.update({"flutterTag": 7})

    def react(jid: str, emoji: str, ts: int) -> MessageMutation:
        return MessageMutation(thread_id=TID, message_id="M1", kind="reaction", ts_ms=ts, reactor_jid=jid, emoji=emoji)

    firestore_store.apply_mutations([react("a@s.whatsapp.net", "👍", T0 + 1), react("b@s.whatsapp.net", "❤", T0 + 2)])
    assert ref.get().to_dict()["reactions"] == {"a@s.whatsapp.net": "👍", "b@s.whatsapp.net": "❤"}
    firestore_store.apply_mutations([react("a@s.whatsapp.net", "", T0 + 3)])
    assert ref.get().to_dict()["reactions"] == {"b@s.whatsapp.net": "❤"}
    firestore_store.apply_mutations([react("b@s.whatsapp.net", "", T0 + 4)])
    after = ref.get().to_dict()
    assert "reactions" not in after  # None means absent: the field is deleted
    assert after["flutterTag"] == 7


def test_lock_documents_layout(firestore_store: FirestoreStore, raw: Any) -> None:
    now = T0
    acc_lease = firestore_store.acquire_lease("account", ACC, "inst-a", ttl_ms=60_000, now_ms=now)
    assert acc_lease is not None
    d = raw.collection("whatsapp_account_leases").document(ACC).get().to_dict()
    assert d == {"ownerId": "inst-a", "expiresAtMs": now + 60_000, "acquiredAt": ms_to_datetime(now), "epoch": 1}

    bf = firestore_store.acquire_lease("backfill", ACC, "inst-a", ttl_ms=900_000, now_ms=now)
    assert bf is not None
    d = raw.collection("whatsapp_backfill_locks").document(ACC).get().to_dict()
    assert d == {"ownerId": "inst-a", "expiresAtMs": now + 900_000, "startedAt": ms_to_datetime(now)}
    a = raw.collection("accounts").document(ACC).get().to_dict()
    assert a["autoBackfillLeaseHolder"] == "inst-a"
    assert a["autoBackfillLeaseUntil"] == ms_to_datetime(now + 900_000)
    assert a["autoBackfillLeaseAcquiredAt"] == ms_to_datetime(now)

    rs = firestore_store.acquire_lease("recent_sync", ACC, "inst-a", ttl_ms=300_000, now_ms=now)
    assert rs is not None
    a = raw.collection("accounts").document(ACC).get().to_dict()
    assert a["recentSyncLeaseHolder"] == "inst-a"
    assert a["recentSyncLeaseUntil"] == ms_to_datetime(now + 300_000)
    assert a["recentSyncLeaseAcquiredAt"] == ms_to_datetime(now)
    account = firestore_store.get_account(ACC)
    assert account is not None and account.recent_sync_lease_holder == "inst-a"

    # A status patch moves the account document's update time: the CAS renew still works.
    firestore_store.update_account(ACC, AccountDoc(state="connected"))
    renewed = firestore_store.renew_lease(rs, ttl_ms=300_000, now_ms=now + 1000)
    assert renewed is not None and renewed.expires_at_ms == now + 301_000

    assert firestore_store.release_lease(bf) is True
    assert not raw.collection("whatsapp_backfill_locks").document(ACC).get().exists
    a = raw.collection("accounts").document(ACC).get().to_dict()
    assert not any(key.startswith("autoBackfillLease") for key in a)
    assert firestore_store.release_lease(renewed) is True
    a = raw.collection("accounts").document(ACC).get().to_dict()
    assert not any(key.startswith("recentSyncLease") for key in a)
    assert a["state"] == "connected"


def test_slash_in_ids_is_escaped(firestore_store: FirestoreStore, raw: Any) -> None:
    account = "team/1"
    tid = thread_id_for(account, JID)
    firestore_store.upsert_messages([message("id/with/slash", thread_id=tid)])
    firestore_store.advance_threads([ThreadSummary(account_id=account, client_jid=JID, last_message_ms=T0)])
    firestore_store.update_account(account, AccountDoc(state="connected"))

    assert raw.collection("threads").document(f"team%2F1__{JID}").get().exists
    assert raw.collection("threads").document(f"team%2F1__{JID}").collection("messages").document("id%2Fwith%2Fslash").get().exists
    got = firestore_store.get_message(tid, "id/with/slash")
    assert got is not None and got.id == "id/with/slash"
    assert [t.account_id for t in firestore_store.list_threads(account, limit=10)] == [account]
    assert firestore_store.list_account_ids() == [account]


class _CountingClient:
    """Wraps the client to count commits: the writes of each one that succeeded, and the
    writes of each one that was refused."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.commits: list[int] = []
        self.refused: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch(self) -> Any:
        batch = self._client.batch()
        commit = batch.commit

        def counted(**kwargs: Any) -> Any:
            writes = len(batch._write_pbs)
            try:
                result = commit(**kwargs)
            except Exception:
                self.refused.append(writes)
                raise
            self.commits.append(writes)
            return result

        batch.commit = counted
        return batch


def test_1200_new_messages_take_three_create_commits_and_no_read(firestore_store: FirestoreStore) -> None:
    counting = _CountingClient(firestore_store.client)
    store = FirestoreStore(counting)
    reads: list[int] = []
    get_all = counting._client.get_all

    def counted_get_all(refs: list[Any], **kw: Any) -> Any:
        reads.append(len(refs))
        return get_all(refs, **kw)

    counting.get_all = counted_get_all  # type: ignore[attr-defined]
    docs = [message(f"M{i:04d}", ts_ms=T0 + i) for i in range(1200)]
    result = store.upsert_messages(docs)
    assert (result.written, result.unchanged, result.commits) == (1200, 0, 3)
    assert sorted(counting.commits) == [200, 500, 500]  # committed concurrently, in any order
    assert reads == []
    assert len(store.list_messages(TID, limit=2000)) == 1200
    assert store.newest_message(TID) == store.get_message(TID, "M1199")
    replay = store.upsert_messages(docs)
    assert (replay.written, replay.unchanged, replay.commits) == (0, 1200, 0)
    assert sorted(counting.commits) == [200, 500, 500]  # the replay wrote nothing...
    assert sorted(counting.refused) == [200, 500, 500]  # ...its optimistic creates were refused whole
    assert sorted(reads) == [200, 500, 500]  # ...and it merged after reading


class _FailingSecondCommit(_CountingClient):
    """The second commit of the client's life fails with an outage; the others go through."""

    def batch(self) -> Any:
        batch = super().batch()
        counted = batch.commit

        def commit(**kwargs: Any) -> Any:
            with self._lock:
                self.attempts += 1
                fail = self.attempts == 2
            if fail:
                raise gexc.ServiceUnavailable("injected: connection reset mid-call")
            return counted(**kwargs)

        batch.commit = commit
        return batch

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.attempts = 0
        self._lock = threading.Lock()


def test_an_outage_mid_call_raises_unavailable_and_the_retry_lands_everything_once(firestore_store: FirestoreStore) -> None:
    """Groups are committed concurrently: when one fails the others may have landed. The call
    raises ``StoreUnavailable`` only after all have finished, and the caller's retry creates
    what is missing and merges (writes nothing for) what landed: no loss, no duplicate."""
    failing = _FailingSecondCommit(firestore_store.client)
    store = FirestoreStore(failing)
    docs = [message(f"M{i:04d}", ts_ms=T0 + i) for i in range(1500)]
    with pytest.raises(StoreUnavailable, match="injected"):
        store.upsert_messages(docs)
    landed = len(store.list_messages(TID, limit=2000))
    assert landed == 1000  # two of three groups committed before the call gave up
    retry = store.upsert_messages(docs)
    assert (retry.written, retry.unchanged) == (500, 1000)
    stored = store.list_messages(TID, limit=2000, order="asc")
    assert [m.id for m in stored] == [d.id for d in docs]


def test_a_group_with_one_stored_message_merges_instead_and_loses_nothing(firestore_store: FirestoreStore) -> None:
    """One stored document makes the whole create commit fail: nothing of it lands, the group
    is merged, the stored message keeps its status and the field another tool wrote."""
    first = message("M0001", ts_ms=T0 + 1)
    firestore_store.upsert_messages([first])
    firestore_store.apply_receipts([ReceiptUpdate(thread_id=TID, message_id="M0001", kind="read", ts_ms=T0 + 9)])
    ref = firestore_store.client.collection("threads").document(TID).collection("messages").document("M0001")
    ref.update({"starredBy": "flutter"})
    docs = [message(f"M{i:04d}", ts_ms=T0 + i, status="delivered") for i in range(5)]
    result = firestore_store.upsert_messages(docs)
    assert (result.written, result.unchanged) == (4, 1)
    assert [m.id for m in firestore_store.list_messages(TID, limit=10, order="asc")] == [f"M{i:04d}" for i in range(5)]
    kept = firestore_store.get_message(TID, "M0001")
    assert kept is not None and kept.status == "read"
    assert ref.get().to_dict()["starredBy"] == "flutter"


def _race(store: FirestoreStore, kind: Any, contenders: int, now: int) -> list[Lease | None]:
    """``contenders`` threads try to take the same lease at once."""
    barrier = threading.Barrier(contenders)
    results: list[Lease | None] = [None] * contenders
    errors: list[BaseException] = []

    def contend(i: int) -> None:
        try:
            barrier.wait()
            results[i] = store.acquire_lease(kind, ACC, f"inst-{i}", ttl_ms=60_000, now_ms=now)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    return results


@pytest.mark.parametrize("kind", ["account", "backfill", "recent_sync"])
def test_concurrent_acquisition_never_yields_two_holders(firestore_store: FirestoreStore, kind: Any) -> None:
    for round_no in range(3):
        # Round 0 races on an absent document (create); later rounds on an expired one (CAS update).
        now = T0 + round_no * 1_000_000
        results = _race(firestore_store, kind, 8, now)
        winners = [lease for lease in results if lease is not None]
        assert len(winners) == 1, f"round {round_no}: {winners}"
        assert firestore_store.read_lease(kind, ACC) == winners[0]
        for i, lease in enumerate(results):
            if lease is None:
                loser = Lease(kind=kind, key=ACC, owner_id=f"inst-{i}", expires_at_ms=now + 60_000, acquired_at_ms=now)
                assert firestore_store.renew_lease(loser, ttl_ms=1, now_ms=now) is None
                assert firestore_store.release_lease(loser) is False


def test_outage_raises_store_unavailable_fast_then_recovers(firestore_emulator: FirestoreEmulator, firestore_store: FirestoreStore) -> None:
    firestore_store.upsert_messages([message("M1")])
    firestore_emulator.stop()
    try:
        began = time.monotonic()
        assert firestore_store.ping() is False
        with pytest.raises(StoreUnavailable):
            firestore_store.upsert_messages([message("M2")])
        with pytest.raises(StoreUnavailable):
            firestore_store.get_thread(TID)
        with pytest.raises(StoreUnavailable):
            firestore_store.acquire_lease("account", ACC, "inst-a", ttl_ms=1000, now_ms=T0)
        assert time.monotonic() - began < 15
    finally:
        firestore_emulator.start()
    deadline = time.monotonic() + 15
    while not firestore_store.ping():
        assert time.monotonic() < deadline, "store did not recover after the emulator came back"
        time.sleep(0.1)
    assert firestore_store.upsert_messages([message("M2")]).written == 1  # (a restart loses the emulator's data)
    assert firestore_store.get_message(TID, "M2") is not None


def test_hung_backend_times_out_as_store_unavailable(firestore_emulator: FirestoreEmulator, firestore_store: FirestoreStore) -> None:
    quick = FirestoreStore(firestore_store.client, timeout=1.0, retry_budget=1.0, ping_timeout=0.5)
    assert quick.ping() is True
    firestore_emulator.pause()
    try:
        began = time.monotonic()
        assert quick.ping() is False
        with pytest.raises(StoreUnavailable):
            quick.get_account(ACC)
        assert time.monotonic() - began < 10
    finally:
        firestore_emulator.resume()
    assert quick.get_account(ACC) is None


def test_threads_missing_last_message_and_list_order(firestore_store: FirestoreStore) -> None:
    summaries = [ThreadSummary(account_id=ACC, client_jid=f"{i}@s.whatsapp.net", last_message_ms=T0 + i) for i in range(3)]
    summaries += [ThreadSummary(account_id=ACC, client_jid=f"bare{i}@s.whatsapp.net", display_name="x") for i in range(3)]
    summaries.append(ThreadSummary(account_id="other", client_jid="bare@s.whatsapp.net", display_name="y"))
    assert firestore_store.advance_threads(summaries) == 7
    missing = firestore_store.threads_missing_last_message(ACC, limit=10)
    assert sorted(t.client_jid for t in missing) == [f"bare{i}@s.whatsapp.net" for i in range(3)]
    assert len(firestore_store.threads_missing_last_message(ACC, limit=2)) == 2
    listed = firestore_store.list_threads(ACC, limit=10)
    assert [t.last_message_at_ms for t in listed[:3]] == [T0 + 2, T0 + 1, T0]
    assert len(listed) == 6 and all(t.last_message_at_ms is None for t in listed[3:])
    assert [t.client_jid for t in firestore_store.list_threads(ACC, limit=2)] == ["2@s.whatsapp.net", "1@s.whatsapp.net"]


def test_from_settings(firestore_emulator: FirestoreEmulator) -> None:
    store = FirestoreStore.from_settings(
        project=firestore_emulator.project, service_account_json=None, credentials_path=None,
        emulator_host=firestore_emulator.hostport,
    )
    try:
        assert store.ping() is True
    finally:
        store.close()
    with pytest.raises(StoreError, match="not valid JSON"):
        FirestoreStore.from_settings(project="p", service_account_json="{nope", credentials_path=None, emulator_host=None)


def test_missing_emulator_fails_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WADAEMON_FIRESTORE_EMULATOR_JAR", "/nonexistent/cloud-firestore-emulator.jar")
    with pytest.raises(pytest.fail.Exception, match="install with: apt-get install google-cloud-cli-firestore-emulator"):
        _locate()
    assert "scripts/ensure-firestore-emulator" in INSTALL_HINT


def test_composite_indexes_declared() -> None:
    spec = json.loads((Path(__file__).parents[2] / "firestore.indexes.json").read_text())
    wanted = {"collectionGroup": "threads", "queryScope": "COLLECTION", "fields": [
        {"fieldPath": "accountId", "order": "ASCENDING"}, {"fieldPath": "lastMessageAtMs", "order": "DESCENDING"},
    ]}
    assert wanted in spec["indexes"]
