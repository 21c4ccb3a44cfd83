"""``GET /api/status/dashboard``: one row per account — connection state, where it runs, the
last history sync, realtime ingest and backfill status — for the operator's overview.

Live fields (state, journal backlog) come from the status board for the accounts this
instance runs; the rest from the account documents, so the dashboard of any instance shows
every account.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from aiohttp import web

from wadaemon.domain import AutoBackfillStatus, BackfillStats
from wadaemon.http.context import context_of
from wadaemon.http.responses import json_response
from wadaemon.http.routes.accounts import account_views
from wadaemon.http.routing import RouteTable
from wadaemon.status import Mode

routes = RouteTable("status")


class RealtimeRow(msgspec.Struct, rename="camel"):
    last_realtime_ingest_at: datetime | None
    last_realtime_message_at: datetime | None
    last_realtime_error: str | None


class BackfillRow(msgspec.Struct, rename="camel", kw_only=True):
    last_backfill_status: str | None
    last_backfill_error: str | None
    last_backfill_stats: BackfillStats | None
    last_auto_backfill_status: AutoBackfillStatus | None
    last_auto_backfill_attempt_at: datetime | None


class DashboardAccount(msgspec.Struct, rename="camel", kw_only=True):
    account_id: str
    state: str
    runs_here: bool
    owner_instance: str | None
    journal_backlog: int | None
    last_backfill_at: datetime | None
    last_history_sync_at: datetime | None
    realtime: RealtimeRow
    backfill: BackfillRow


class DashboardBody(msgspec.Struct, rename="camel"):
    instance_id: str
    mode: Mode
    timestamp: datetime
    accounts: list[DashboardAccount]
    success: bool = True


@routes.get("/api/status/dashboard", level="api", response=DashboardBody,
            summary="Per account: state, last backfill and history sync, realtime and backfill status")
async def dashboard(request: web.Request) -> web.Response:
    context = context_of(request)
    snapshot = context.status.snapshot()
    rows = []
    for view in await account_views(request):
        doc, running = view.doc, view.running
        rows.append(DashboardAccount(
            account_id=view.account_id,
            state=view.state,
            runs_here=running is not None,
            owner_instance=view.owner_instance,
            journal_backlog=running.journal_backlog if running is not None else None,
            last_backfill_at=doc.last_backfill_at,
            last_history_sync_at=doc.last_history_sync_at,
            realtime=RealtimeRow(doc.last_realtime_ingest_at, doc.last_realtime_message_at,
                                 doc.last_realtime_error),
            backfill=BackfillRow(
                last_backfill_status=doc.last_backfill_status,
                last_backfill_error=doc.last_backfill_error,
                last_backfill_stats=doc.last_backfill_stats,
                last_auto_backfill_status=doc.last_auto_backfill_status,
                last_auto_backfill_attempt_at=doc.last_auto_backfill_attempt_at,
            ),
        ))
    return json_response(DashboardBody(
        instance_id=snapshot.instance_id, mode=snapshot.mode,
        timestamp=datetime.fromtimestamp(context.clock(), UTC), accounts=rows))
