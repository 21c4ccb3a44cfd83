"""GET /diag: field names, per-account progress, latestRealtime, and store failures."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec
import pytest

from supervisors.health import NodeHealth
from tests.http.conftest import NOW_S, Serve
from tests.http.fakes import FakeStore, fetch
from wadaemon.domain import AccountDoc, InstanceDoc, Lease
from wadaemon.http.diag import DiagAccount, DiagHistory
from wadaemon.status import AccountStatus, ClusterView, DaemonStatus, HistoryProgress
from wadaemon.store.contract import StoreUnavailable

TOP_LEVEL = {"ready", "mode", "instanceId", "storeBackend", "storeConnected", "firestoreConnected",
             "latestRealtime", "timestamp", "accounts", "supervision", "cluster"}


def at(hour: int) -> datetime:
    return datetime(2024, 1, 2, hour, 0, 0, tzinfo=UTC)


def realtime_doc(ingest: datetime | None, message: datetime | None = None,
                 error: str | None = None) -> AccountDoc:
    return AccountDoc(last_realtime_ingest_at=ingest, last_realtime_message_at=message,
                      last_realtime_error=error)


def test_diag_shape_and_account_progress(serve: Serve, board: DaemonStatus) -> None:
    board.set_mode("active")
    account = board.account("acc1")
    account.state = "open"
    account.journal_backlog = 7
    account.journal_oldest_pending_ms = 1234
    account.history.chunks = 3
    account.history.last_sync_type = "RECENT"
    account.history.saved = 40
    account.history_request_capability = "supported"
    account.pending_receipts = 2
    server = serve(clock=lambda: NOW_S)

    reply = fetch(server.port, "/diag")

    assert reply.status == 200
    body = reply.json
    assert set(body) == TOP_LEVEL
    assert body["ready"] is True
    assert body["mode"] == "active"
    assert body["instanceId"] == "inst-1"
    assert body["storeBackend"] == "fake"
    assert body["storeConnected"] is True
    assert body["firestoreConnected"] is False  # the store answered, but it is not Firestore
    assert body["timestamp"] == "2024-01-02T03:04:05Z"
    assert body["supervision"] is None
    assert body["cluster"] is None  # ownership has not looked yet
    [acc] = body["accounts"]
    assert acc["accountId"] == "acc1"
    assert acc["state"] == "open"
    assert acc["journalBacklog"] == 7
    assert acc["journalOldestPendingMs"] == 1234
    assert acc["historyRequestCapability"] == "supported"
    assert acc["pendingReceipts"] == 2
    assert acc["history"]["chunks"] == 3
    assert acc["history"]["lastSyncType"] == "RECENT"
    assert acc["history"]["saved"] == 40
    assert all("_" not in key for key in acc) and all("_" not in key for key in acc["history"])


def test_diag_mirrors_every_status_field() -> None:
    """A field added to the status board must be added to /diag's wire Structs too."""
    assert set(DiagAccount.__struct_fields__) == set(AccountStatus.__struct_fields__)
    assert set(DiagHistory.__struct_fields__) == set(HistoryProgress.__struct_fields__)


def test_diag_supervision_tree_in_wire_form(serve: Serve, board: DaemonStatus) -> None:
    tree = NodeHealth(name="wadaemon", kind="supervisor", state="running", restarts=0,
                      last_error=None, since=NOW_S, children=(
                          NodeHealth(name="http", kind="worker", state="backoff", restarts=2,
                                     last_error="OSError: port taken", since=NOW_S + 1),))
    board.set_supervision(lambda: tree)
    server = serve()

    supervision = fetch(server.port, "/diag").json["supervision"]

    assert supervision == {
        "name": "wadaemon", "kind": "supervisor", "state": "running", "restarts": 0,
        "lastError": None, "since": "2024-01-02T03:04:05Z",
        "children": [{"name": "http", "kind": "worker", "state": "backoff", "restarts": 2,
                      "lastError": "OSError: port taken", "since": "2024-01-02T03:04:06Z",
                      "children": []}],
    }


def test_latest_realtime_newest_first_at_most_three(serve: Serve, board: DaemonStatus) -> None:
    store = FakeStore({
        "a": realtime_doc(at(1), at(1)),
        "b": realtime_doc(at(5), at(4)),
        "c": realtime_doc(None, None, "decrypt failed"),  # never ingested: last
        "d": realtime_doc(at(3), None, "store write failed"),
        "e": AccountDoc(state="connected"),  # no realtime fields: not listed
        "f": None,  # no account document
    })
    for account_id in "abcdef":
        board.account(account_id)
    server = serve(store=store)

    latest = fetch(server.port, "/diag").json["latestRealtime"]

    assert latest == [
        {"accountId": "b", "lastRealtimeIngestAt": "2024-01-02T05:00:00Z",
         "lastRealtimeMessageAt": "2024-01-02T04:00:00Z", "lastRealtimeError": None},
        {"accountId": "d", "lastRealtimeIngestAt": "2024-01-02T03:00:00Z",
         "lastRealtimeMessageAt": None, "lastRealtimeError": "store write failed"},
        {"accountId": "a", "lastRealtimeIngestAt": "2024-01-02T01:00:00Z",
         "lastRealtimeMessageAt": "2024-01-02T01:00:00Z", "lastRealtimeError": None},
    ]


def test_latest_realtime_never_ingested_listed_after_ingested(serve: Serve,
                                                               board: DaemonStatus) -> None:
    store = FakeStore({"a": realtime_doc(None, None, "decrypt failed"), "b": realtime_doc(at(2))})
    board.account("a")
    board.account("b")
    server = serve(store=store)

    latest = fetch(server.port, "/diag").json["latestRealtime"]

    assert [row["accountId"] for row in latest] == ["b", "a"]


def test_latest_realtime_reads_only_this_instances_accounts(serve: Serve,
                                                             board: DaemonStatus) -> None:
    store = FakeStore({"mine": realtime_doc(at(1)), "other": realtime_doc(at(9))})
    board.account("mine")
    server = serve(store=store)

    latest = fetch(server.port, "/diag").json["latestRealtime"]

    assert [row["accountId"] for row in latest] == ["mine"]
    assert "list_account_ids" not in store.calls


def test_latest_realtime_on_passive_instance_lists_stored_accounts(serve: Serve) -> None:
    store = FakeStore({"x": realtime_doc(at(1)), "y": realtime_doc(at(2))})
    server = serve(store=store)

    latest = fetch(server.port, "/diag").json["latestRealtime"]

    assert [row["accountId"] for row in latest] == ["y", "x"]
    assert "list_account_ids" in store.calls


@pytest.mark.parametrize("failure", [False, StoreUnavailable("deadline exceeded")],
                         ids=["ping-false", "ping-raises"])
def test_diag_store_down(serve: Serve, board: DaemonStatus,
                         failure: bool | BaseException) -> None:
    store = FakeStore({"acc1": realtime_doc(at(1))})
    store.ping_result = failure
    board.account("acc1").journal_backlog = 4
    server = serve(store=store)

    reply = fetch(server.port, "/diag")

    assert reply.status == 200
    assert reply.json["storeConnected"] is False
    assert reply.json["firestoreConnected"] is False
    assert reply.json["latestRealtime"] == []
    assert reply.json["accounts"][0]["journalBacklog"] == 4  # the board still shows
    assert not any(call.startswith("get_account") for call in store.calls)


def test_diag_store_hanging_is_bounded_by_the_timeout(serve: Serve, board: DaemonStatus) -> None:
    store = FakeStore({"acc1": realtime_doc(at(1))})
    store.hang_ping = True
    board.account("acc1")
    server = serve(store=store, store_timeout=0.2)

    started = time.monotonic()
    reply = fetch(server.port, "/diag", timeout=5.0)

    assert time.monotonic() - started < 2.0
    assert store.entered.is_set()
    assert reply.status == 200
    assert reply.json["storeConnected"] is False
    assert reply.json["latestRealtime"] == []


@pytest.mark.parametrize("mode", ["raises", "hangs"])
def test_diag_account_reads_failing_after_good_ping(serve: Serve, board: DaemonStatus,
                                                     mode: str) -> None:
    """The ping answered, so the store is connected; the unreadable part is just empty."""
    store = FakeStore({"acc1": realtime_doc(at(1))})
    if mode == "raises":
        store.read_error = StoreUnavailable("contention")
    else:
        store.hang_reads = True
    board.account("acc1")
    server = serve(store=store, store_timeout=0.2)

    started = time.monotonic()
    reply = fetch(server.port, "/diag", timeout=5.0)

    assert time.monotonic() - started < 2.0
    assert reply.status == 200
    assert reply.json["storeConnected"] is True
    assert reply.json["latestRealtime"] == []
    assert "get_account:acc1" in store.calls


def test_diag_body_is_valid_for_msgspec_decoding(serve: Serve) -> None:
    """Timestamps are ISO-8601: they decode back into aware datetimes."""
    server = serve(clock=lambda: NOW_S)

    raw = fetch(server.port, "/diag").raw
    decoded = msgspec.json.decode(raw, type=dict[str, object])

    assert msgspec.convert(decoded["timestamp"], datetime) == datetime.fromtimestamp(NOW_S, UTC)


def test_diag_shows_owner_epoch_and_expiry_per_account_and_every_heartbeat(serve: Serve,
                                                                           board: DaemonStatus) -> None:
    board.set_mode("passive")
    board.set_cluster(ClusterView(
        instances=[InstanceDoc(instance_id="inst-2", heartbeat_at_ms=1_700_000_000_000,
                               started_at_ms=1_699_999_000_000, version="0.1.0", accounts=["acc1"])],
        leases=[Lease(kind="account", key="acc1", owner_id="inst-2", expires_at_ms=1_700_000_030_000,
                      acquired_at_ms=1_699_999_000_000, epoch=4)],
        at_ms=1_700_000_001_000))
    body = fetch(serve().port, "/diag").json
    assert body["mode"] == "passive"
    assert body["cluster"] == {
        "asOf": "2023-11-14T22:13:21Z",
        "instances": [{"instanceId": "inst-2", "heartbeatAt": "2023-11-14T22:13:20Z",
                       "startedAt": "2023-11-14T21:56:40Z", "accounts": ["acc1"], "pinnedAccounts": [],
                       "accepting": True, "version": "0.1.0"}],
        "leases": [{"accountId": "acc1", "ownerId": "inst-2", "epoch": 4, "expiresAt": "2023-11-14T22:13:50Z",
                    "acquiredAt": "2023-11-14T21:56:40Z"}],
    }


@pytest.mark.parametrize(("backend", "answers", "store_connected", "firestore_connected"), [
    ("sqlite", True, True, False),
    ("sqlite", False, False, False),
    ("firestore", True, True, True),
    ("firestore", False, False, False),
])
def test_firestore_connected_means_firestore_answered(
        serve: Serve, backend: str, answers: bool, store_connected: bool,
        firestore_connected: bool) -> None:
    store = FakeStore()
    store.backend = backend
    store.ping_result = answers
    server = serve(store=store)

    body = fetch(server.port, "/diag").json

    assert body["storeBackend"] == backend
    assert body["storeConnected"] is store_connected
    assert body["firestoreConnected"] is firestore_connected
