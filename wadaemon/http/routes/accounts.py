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

from datetime import datetime

import msgspec
from aiohttp import web

from wadaemon.domain import AccountDoc
from wadaemon.http.context import context_of
from wadaemon.http.responses import json_response
from wadaemon.http.routes.common import store_call
from wadaemon.http.routing import RouteTable
from wadaemon.identity import phone_e164
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


def stored_accounts(store: Store, extra: list[str]) -> dict[str, AccountDoc | None]:
    """Blocking: every stored account document, plus ``extra`` ids (maybe not stored yet)."""
    ids = sorted(set(store.list_account_ids()) | set(extra))
    return {account_id: store.get_account(account_id) for account_id in ids}


@routes.get("/api/whatsapp/accounts", level="api", response=AccountsBody,
            summary="Accounts with their state and owner instance")
async def list_accounts(request: web.Request) -> web.Response:
    snapshot = context_of(request).status.snapshot()
    live = {a.account_id: a for a in snapshot.accounts}
    docs = await store_call(request, lambda store: stored_accounts(store, list(live)))
    items = []
    for account_id, doc in docs.items():
        doc = doc or AccountDoc()
        running = live.get(account_id)
        state = running.state if running is not None else (doc.state or "unknown")
        phone_jid = (running.phone_jid if running is not None and running.phone_jid else doc.phone_jid) or None
        phone = phone_e164(phone_jid) if phone_jid else ""
        items.append(AccountItem(
            id=account_id, name=account_id, status=state, state=state,
            phone=phone or None, phone_number=phone or None, phone_jid=phone_jid,
            owner_instance=snapshot.instance_id if running is not None else doc.owner_instance,
            runs_here=running is not None,
            last_history_sync_at=doc.last_history_sync_at,
            last_backfill_at=doc.last_backfill_at,
            last_realtime_ingest_at=doc.last_realtime_ingest_at,
        ))
    return json_response(AccountsBody(accounts=items, count=len(items)))
