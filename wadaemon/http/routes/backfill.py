"""Manual backfill: start one now (data and admin routes), read how the last one went (admin).

A start goes through ``DaemonControl.trigger_backfill`` — the scheduler's manual trigger: it
bypasses the account's cooldown but never the backfill lock, so two runs for one account never
overlap. It answers 202 at once (the run is asynchronous); when a run is already going, the
answer is 200 with ``alreadyRunning: true`` and nothing new starts. An instance that does not
run the account refuses (409 ``account_not_here``): the run belongs to the owner.

Both start routes are rate limited per credential (bucket ``backfill``).
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from aiohttp import web

from wadaemon.domain import AutoBackfillStatus, BackfillStats
from wadaemon.http.responses import json_response
from wadaemon.http.routes.common import control_for_owned, require_account, store_call
from wadaemon.http.routing import RouteTable

routes = RouteTable("backfill")


class BackfillAccepted(msgspec.Struct, rename="camel"):
    message: str
    account_id: str
    already_running: bool = False
    success: bool = True


class BackfillStatusBody(msgspec.Struct, rename="camel", kw_only=True):
    account_id: str
    last_backfill_at: datetime | None
    last_backfill_status: str | None
    last_backfill_error: str | None
    last_backfill_stats: BackfillStats | None
    last_auto_backfill_status: AutoBackfillStatus | None
    last_auto_backfill_attempt_at: datetime | None
    last_auto_backfill_success_at: datetime | None
    success: bool = True


async def _start(request: web.Request, started_message: str) -> web.Response:
    account_id = request.match_info["accountId"]
    control = await control_for_owned(request, account_id)
    outcome = await control.trigger_backfill(account_id)
    if not outcome.started:
        return json_response(BackfillAccepted(message="Backfill already running", account_id=account_id,
                                              already_running=True))
    return json_response(BackfillAccepted(message=started_message, account_id=account_id), status=202)


@routes.post("/api/whatsapp/backfill/{accountId}", level="api", response=BackfillAccepted, status=202,
             also={200: BackfillAccepted}, errors=(409,), rate_limit="backfill",
             summary="Start a backfill of the account now (asynchronous)")
async def start_backfill(request: web.Request) -> web.Response:
    return await _start(request, "Backfill started (runs asynchronously)")


@routes.post("/api/admin/backfill/{accountId}", level="admin", response=BackfillAccepted, status=202,
             also={200: BackfillAccepted}, errors=(409,), rate_limit="backfill", tag="admin",
             summary="Enqueue a backfill of the account (admin)")
async def admin_start_backfill(request: web.Request) -> web.Response:
    return await _start(request, "Backfill enqueued")


@routes.get("/api/admin/backfill/{accountId}/status", level="admin", response=BackfillStatusBody,
            tag="admin", summary="How the account's last backfill went (admin)")
async def backfill_status(request: web.Request) -> web.Response:
    account_id = request.match_info["accountId"]
    await require_account(request, account_id)
    doc = await store_call(request, lambda store: store.get_account(account_id))
    if doc is None:
        return json_response(BackfillStatusBody(
            account_id=account_id, last_backfill_at=None, last_backfill_status=None,
            last_backfill_error=None, last_backfill_stats=None, last_auto_backfill_status=None,
            last_auto_backfill_attempt_at=None, last_auto_backfill_success_at=None))
    return json_response(BackfillStatusBody(
        account_id=account_id,
        last_backfill_at=doc.last_backfill_at,
        last_backfill_status=doc.last_backfill_status,
        last_backfill_error=doc.last_backfill_error,
        last_backfill_stats=doc.last_backfill_stats,
        last_auto_backfill_status=doc.last_auto_backfill_status,
        last_auto_backfill_attempt_at=doc.last_auto_backfill_attempt_at,
        last_auto_backfill_success_at=doc.last_auto_backfill_success_at,
    ))
