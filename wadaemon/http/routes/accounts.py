"""``GET /api/whatsapp/accounts``: every account known here or in the store, with its state
and owner instance.

The shape is what the Flutter inbox and the ops scripts of the original backend parse:
``{success, accounts: [{id, name, status, phone, phoneNumber, ...}], count}``, where
``status`` is the connection state (``connected`` for a connected account). ``name`` is the
account id: accounts have no other display name here. ``phone`` and ``phoneNumber`` carry the
same E.164 number (both spellings are read by existing clients).

State comes from the status board for the accounts this instance runs (live), and from the
account document for the others (as last written by their owner, ``ownerInstance``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec
from aiohttp import web

from wadaemon.domain import AccountDoc
from wadaemon.http.context import context_of
from wadaemon.http.responses import json_response
from wadaemon.http.routes.common import store_call
from wadaemon.http.routing import RouteTable
from wadaemon.identity import phone_e164
from wadaemon.status import AccountStatus
from wadaemon.store.contract import Store

routes = RouteTable("accounts")


class AccountItem(msgspec.Struct, rename="camel", kw_only=True):
    id: str
    name: str
    status: str
    state: str
    phone: str | None
    phone_number: str | None
    phone_jid: str | None
    owner_instance: str | None
    runs_here: bool
    last_history_sync_at: datetime | None
    last_backfill_at: datetime | None
    last_realtime_ingest_at: datetime | None


class AccountsBody(msgspec.Struct, rename="camel"):
    accounts: list[AccountItem]
    count: int
    success: bool = True


@dataclass(frozen=True)
class AccountView:
    """One account as this instance sees it: its stored document and, when it runs here,
    its live status (which wins for the state)."""

    account_id: str
    doc: AccountDoc
    running: AccountStatus | None
    state: str
    owner_instance: str | None


def stored_accounts(store: Store, extra: list[str]) -> dict[str, AccountDoc | None]:
    """Blocking: every stored account document, plus ``extra`` ids (maybe not stored yet)."""
    ids = sorted(set(store.list_account_ids()) | set(extra))
    return {account_id: store.get_account(account_id) for account_id in ids}


async def account_views(request: web.Request) -> list[AccountView]:
    """Every account known to the store or run here, by id."""
    snapshot = context_of(request).status.snapshot()
    live = {a.account_id: a for a in snapshot.accounts}
    docs = await store_call(request, lambda store: stored_accounts(store, list(live)))
    views = []
    for account_id, stored in docs.items():
        doc = stored or AccountDoc()
        running = live.get(account_id)
        views.append(AccountView(
            account_id=account_id, doc=doc, running=running,
            state=running.state if running is not None else (doc.state or "unknown"),
            owner_instance=snapshot.instance_id if running is not None else doc.owner_instance,
        ))
    return views


@routes.get("/api/whatsapp/accounts", level="api", response=AccountsBody,
            summary="Accounts with their state and owner instance")
async def list_accounts(request: web.Request) -> web.Response:
    items = []
    for view in await account_views(request):
        doc, running = view.doc, view.running
        phone_jid = (running.phone_jid if running is not None and running.phone_jid else doc.phone_jid) or None
        phone = (phone_e164(phone_jid) if phone_jid else "") or None
        items.append(AccountItem(
            id=view.account_id, name=view.account_id, status=view.state, state=view.state,
            phone=phone, phone_number=phone, phone_jid=phone_jid,
            owner_instance=view.owner_instance, runs_here=running is not None,
            last_history_sync_at=doc.last_history_sync_at,
            last_backfill_at=doc.last_backfill_at,
            last_realtime_ingest_at=doc.last_realtime_ingest_at,
        ))
    return json_response(AccountsBody(accounts=items, count=len(items)))
