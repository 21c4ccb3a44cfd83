"""``GET /diag``: what an operator looks at first (the HTTP contract, plus per-account progress).

Shape::

    {ready, mode, instanceId, storeBackend, storeConnected, firestoreConnected,
     latestRealtime: [{accountId, lastRealtimeIngestAt, lastRealtimeMessageAt, lastRealtimeError}],
     timestamp, accounts: [{accountId, state, journalBacklog, history: {...}, ...}],
     supervision: {name, kind, state, restarts, lastError, since, children: [...]},
     cluster: {asOf, instances: [{instanceId, heartbeatAt, startedAt, accounts, pinnedAccounts,
                                  accepting, version}],
               leases: [{accountId, ownerId, epoch, expiresAt, acquiredAt}]}}

``cluster`` is what this instance's ownership actor last read (every retry period): who owns
each account, under which fencing epoch and until when, and every instance's heartbeat; null
before the first read.

It never fails because of the store: the status board is in memory, and the store part
(``storeConnected``, ``latestRealtime``) shares one time budget — the store timeout — for
the ping and the account reads together. When the store is down, slow or raising, the answer
is ``storeConnected: false`` / ``latestRealtime: []`` with a 200.

``storeConnected`` is true when the store answered a ping, whatever the backend;
``storeBackend`` says which store that is (``firestore`` or ``sqlite``). ``firestoreConnected``
is kept because the Flutter app and ops scripts of the original backend read it, and it means
what it says: true only when the store is Firestore and it answered (false on SQLite).

``latestRealtime``: the accounts this instance runs (those on the status board) — or, on an
instance running none (passive), every account in the store — whose account document has any
realtime field, newest ``lastRealtimeIngestAt`` first (never-ingested last), at most three.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from supervisors.health import NodeHealth
from wadaemon.domain import SyncGap, ms_to_datetime
from wadaemon.http.context import context_of
from wadaemon.http.responses import json_response
from wadaemon.http.routing import RouteTable
from wadaemon.http.store_access import StoreCallFailed
from wadaemon.status import AccountStatus, ClusterView, Mode
from wadaemon.store.contract import Store

routes = RouteTable("probes")

LATEST_REALTIME_LIMIT = 3


class RealtimeStatus(msgspec.Struct, rename="camel"):
    account_id: str
    last_realtime_ingest_at: datetime | None
    last_realtime_message_at: datetime | None
    last_realtime_error: str | None


class DiagHistory(msgspec.Struct, rename="camel"):
    """Mirror of ``wadaemon.status.HistoryProgress`` with wire names."""

    chunks: int
    last_sync_type: str
    last_chunk_order: int
    progress: int
    saved: int
    skipped: int
    errors: int
    total: int
    saved_by_this_run: int


class DiagAccount(msgspec.Struct, rename="camel"):
    """Mirror of ``wadaemon.status.AccountStatus`` with wire names (a test keeps them in step)."""

    account_id: str
    state: str
    phone_jid: str
    journal_backlog: int
    journal_oldest_pending_ms: int | None
    history: DiagHistory
    history_request_capability: str
    pending_receipts: int
    pending_mutations: int
    pending_entries: int
    realtime_written: int
    realtime_errors: int
    last_realtime_ingest_ms: int | None
    last_realtime_message_ms: int | None
    receipts_applied: int
    mutations_applied: int
    rejected: int
    capture_errors: int
    last_error: str
    dead_letters: int
    last_dead_letter: str
    pipeline_restarts: int
    held_events: int
    journal_error: str
    store_waiting_since_ms: int | None
    journal_damage: str
    pipeline_restarted_at_ms: int | None
    backfill_blocked: str
    backfill_next_eligible_ms: int | None
    backfill_lock_holder: str
    outstanding_requests: list[str]
    open_gaps: list[SyncGap]
    recent_sync_next_ms: int | None
    backfill_runs: dict[str, int]
    history_requests_sent: int
    history_requests_answered: int
    history_requests_answered_late: int
    history_requests_timed_out: int
    sync_gaps_opened: int
    sync_gaps_closed: int


class SupervisionNode(msgspec.Struct, rename="camel"):
    """``supervisors.health.NodeHealth`` with wire names and ``since`` as a timestamp."""

    name: str
    kind: str
    state: str
    restarts: int
    last_error: str | None
    since: datetime
    children: list[SupervisionNode]


class DiagInstance(msgspec.Struct, rename="camel", kw_only=True):
    instance_id: str
    heartbeat_at: datetime
    started_at: datetime
    accounts: list[str]
    pinned_accounts: list[str]
    accepting: bool
    version: str


class DiagLease(msgspec.Struct, rename="camel", kw_only=True):
    account_id: str
    owner_id: str
    epoch: int
    expires_at: datetime
    acquired_at: datetime


class DiagCluster(msgspec.Struct, rename="camel"):
    as_of: datetime
    instances: list[DiagInstance]
    leases: list[DiagLease]


def diag_cluster(view: ClusterView | None) -> DiagCluster | None:
    if view is None:
        return None
    return DiagCluster(
        as_of=ms_to_datetime(view.at_ms),
        instances=[DiagInstance(instance_id=i.instance_id, heartbeat_at=ms_to_datetime(i.heartbeat_at_ms),
                                started_at=ms_to_datetime(i.started_at_ms), accounts=i.accounts,
                                pinned_accounts=i.pinned_accounts, accepting=i.accepting, version=i.version)
                   for i in view.instances],
        leases=[DiagLease(account_id=lease.key, owner_id=lease.owner_id, epoch=lease.epoch,
                          expires_at=ms_to_datetime(lease.expires_at_ms),
                          acquired_at=ms_to_datetime(lease.acquired_at_ms)) for lease in view.leases],
    )


class DiagBody(msgspec.Struct, rename="camel"):
    ready: bool
    mode: Mode
    instance_id: str
    store_backend: str
    store_connected: bool
    firestore_connected: bool
    latest_realtime: list[RealtimeStatus]
    timestamp: datetime
    accounts: list[DiagAccount]
    supervision: Any
    cluster: DiagCluster | None


def read_latest_realtime(
    store: Store, account_ids: Sequence[str], limit: int = LATEST_REALTIME_LIMIT
) -> list[RealtimeStatus]:
    """Blocking: runs in a store worker thread. ``account_ids`` empty → every stored account."""
    rows: list[RealtimeStatus] = []
    for account_id in account_ids or store.list_account_ids():
        doc = store.get_account(account_id)
        if doc is None:
            continue
        row = RealtimeStatus(
            account_id=account_id,
            last_realtime_ingest_at=doc.last_realtime_ingest_at,
            last_realtime_message_at=doc.last_realtime_message_at,
            last_realtime_error=doc.last_realtime_error,
        )
        if (row.last_realtime_ingest_at, row.last_realtime_message_at,
                row.last_realtime_error) != (None, None, None):
            rows.append(row)

    def newest_first(row: RealtimeStatus) -> tuple[bool, float, str]:
        ingest = row.last_realtime_ingest_at
        return ingest is None, -(ingest.timestamp() if ingest else 0.0), row.account_id

    return sorted(rows, key=newest_first)[:limit]


def supervision_tree(tree: Any) -> Any:
    """The board's supervision snapshot in wire form (anything unknown: msgspec builtins)."""
    if isinstance(tree, NodeHealth):
        return _node(tree)
    return msgspec.to_builtins(tree)


def _node(node: NodeHealth) -> SupervisionNode:
    return SupervisionNode(
        name=node.name,
        kind=node.kind,
        state=node.state,
        restarts=node.restarts,
        last_error=node.last_error,
        since=datetime.fromtimestamp(node.since, UTC),
        children=[_node(child) for child in node.children],
    )


def diag_account(status: AccountStatus) -> DiagAccount:
    return msgspec.convert(status, DiagAccount, from_attributes=True)


@routes.get("/diag", level="open", response=DiagBody,
             summary="What an operator looks at first: per-account progress, supervision tree")
async def diag(request: web.Request) -> web.Response:
    context = context_of(request)
    snapshot = context.status.snapshot()
    gateway = context.store
    loop = asyncio.get_running_loop()
    deadline = loop.time() + gateway.timeout

    connected = await gateway.reachable()
    latest: list[RealtimeStatus] = []
    if connected:
        account_ids = [account.account_id for account in snapshot.accounts]
        try:
            latest = await gateway.call(lambda store: read_latest_realtime(store, account_ids),
                                        budget=deadline - loop.time())
        except StoreCallFailed:
            latest = []

    return json_response(DiagBody(
        ready=snapshot.ready,
        mode=snapshot.mode,
        instance_id=snapshot.instance_id,
        store_backend=gateway.backend,
        store_connected=connected,
        firestore_connected=connected and gateway.backend == "firestore",
        latest_realtime=latest,
        timestamp=datetime.fromtimestamp(context.clock(), UTC),
        accounts=[diag_account(account) for account in snapshot.accounts],
        supervision=supervision_tree(snapshot.supervision),
        cluster=diag_cluster(snapshot.cluster),
    ))
