"""What the route modules share: bounded store calls, the account check, cursor tokens.

* ``store_call`` — every store read of a handler goes through the gateway with its timeout;
  a timeout, an outage or a backend error answers ``503 store_unavailable`` quickly, never a
  500, and never an unbounded wait.
* ``require_account`` — an account is known when this instance runs it (status board) or the
  store has its document; anything else is ``404 account_not_found``.
* Cursor tokens (``before``) are opaque to clients: URL-safe base64 of the ``PageKey`` JSON.
  A token that does not decode is ``400 bad_parameter`` naming ``before``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

import msgspec
from aiohttp import web

from wadaemon.http.context import context_of
from wadaemon.http.control import AccountNotHere, DaemonControl
from wadaemon.http.errors import ApiError
from wadaemon.http.routing import BadParameter, Param, text_param
from wadaemon.http.store_access import StoreCallFailed
from wadaemon.store.contract import PageKey, Store

T = TypeVar("T")

BEFORE = text_param("before", max_length=256,
                    description="Opaque cursor: the nextBefore of the previous page")


async def store_call(request: web.Request, fn: Callable[[Store], T]) -> T:
    try:
        return await context_of(request).api_store.call(fn)
    except StoreCallFailed as exc:
        raise ApiError(503, "store_unavailable", "the store did not answer in time") from exc


def runs_here(request: web.Request, account_id: str) -> bool:
    return context_of(request).status.has_account(account_id)


async def require_account(request: web.Request, account_id: str) -> None:
    """404 unless this instance runs the account or the store has its document (the store is
    asked only for accounts that run elsewhere)."""
    if runs_here(request, account_id):
        return
    if await store_call(request, lambda store: store.get_account(account_id)) is None:
        raise ApiError(404, "account_not_found", f"unknown account {account_id}")


async def control_for_owned(request: web.Request, account_id: str) -> DaemonControl:
    """The daemon's control, for an account this instance runs: 404 for an unknown account,
    409 ``account_not_here`` (naming the owner) for one run elsewhere, 503 when the daemon
    takes no actions."""
    await require_account(request, account_id)
    if not runs_here(request, account_id):
        doc = await store_call(request, lambda store: store.get_account(account_id))
        raise AccountNotHere(account_id, doc.owner_instance if doc else None)
    control = context_of(request).control
    if control is None:
        raise ApiError(503, "unavailable", "the daemon is not accepting actions")
    return control


_key_decoder = msgspec.json.Decoder(PageKey)


def encode_cursor(key: PageKey) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode().rstrip("=")


def decode_cursor(param: Param, raw: str | None) -> PageKey | None:
    if raw is None:
        return None
    try:
        return _key_decoder.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise BadParameter(param.name, "is not a cursor this server issued") from None
