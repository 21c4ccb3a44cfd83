"""The daemon's side of ``wadaemon.http.control.DaemonControl``: sends and backfill triggers.

``DaemonActions`` is a child of the root supervisor (``control``). Its own nursery runs each
send's delivery, so a delivery outlives the HTTP request that started it: the request waits
``send_wait_s`` for WhatsApp's answer and otherwise answers ``queued`` while the delivery goes
on and settles the message (``wadaemon.outbound.deliver``: the worker's outcome is honoured,
never contradicted by a timeout). HTTP handlers reach it through the ``ActionBridge``; the
methods that run in trio are the ``_``-prefixed ones.

Idempotency by ``clientMessageId`` is kept in ``OutboundLedger``, a small SQLite file in the
data directory (not in the store): it must answer even when the store is down, it is needed
only by the instance that runs the account (only the owner sends), and it survives restarts.
The record is written — with the local id — *before* the message is handed to WhatsApp, so a
retry can never send twice; it is updated when the send settles, so a retry answers the
message's current state (``sent`` under WhatsApp's id, ``failed``, or still ``queued``). A
process that dies mid-send leaves the record ``queued``: the outcome is not known, and the
API says exactly that instead of guessing.

Backfill: the manual trigger belongs to the backfill scheduler
(``wadaemon.schedulers.view.BackfillControl``), plugged in as ``backfill`` through
``backfill_trigger``, which turns the scheduler's outcome into the API's answer: ``started``
and ``queued`` (every slot busy: it starts when one frees) are a start; ``running`` (here) and
``running_elsewhere`` (another instance holds the lock) are "already running"; the rest are
refusals. Without a scheduler, a trigger answers 409 ``backfill_unavailable``.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

import trio

from wadaemon import outbound
from wadaemon.actors.context import AccountContext
from wadaemon.domain import MessageStatus
from wadaemon.http.bridge import ActionBridge, DaemonUnavailable
from wadaemon.http.control import (
    AccountNotHere,
    BackfillStart,
    BackfillUnavailable,
    BadRecipient,
    ClientMessageIdReused,
    NotConnected,
    SendOutcome,
)
from wadaemon.schedulers.view import BackfillControl
from wadaemon.whatsapp.transport import Transport

log = logging.getLogger("wadaemon.control")

#: How long a send request waits for WhatsApp's answer before answering ``queued`` (202).
SEND_WAIT_S = 15.0

BackfillTrigger = Callable[[str], Awaitable[BackfillStart]]


def backfill_trigger(scheduler: BackfillControl, state_of: Callable[[str], str]) -> BackfillTrigger:
    """The scheduler's manual trigger as the API answers it (module docstring)."""

    async def trigger(account_id: str) -> BackfillStart:
        outcome = await scheduler.trigger_backfill(account_id)
        if outcome in ("started", "queued"):
            return BackfillStart(True, outcome)
        if outcome in ("running", "running_elsewhere"):
            return BackfillStart(False, outcome)
        if outcome == "unavailable":
            raise BackfillUnavailable("this account's WhatsApp client cannot request history from the phone "
                                      "(history_requests_unavailable): nothing was started")
        if outcome == "not_connected":
            raise NotConnected(account_id, state_of(account_id))
        raise AccountNotHere(account_id, None)

    return trigger


class SendingAccount(Protocol):
    """What a send needs of an account runtime (``actors.account.AccountRuntime``)."""

    @property
    def ctx(self) -> AccountContext: ...

    @property
    def transport(self) -> Transport: ...


class OutboundLedger:
    """``clientMessageId`` → the message it produced, durable across restarts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS sends (account_id TEXT NOT NULL, client_message_id TEXT NOT NULL,"
            " fingerprint TEXT NOT NULL, message_id TEXT NOT NULL, thread_id TEXT NOT NULL,"
            " status TEXT NOT NULL, error TEXT NOT NULL, PRIMARY KEY (account_id, client_message_id))"
        )

    def get(self, account_id: str, client_message_id: str) -> tuple[str, SendOutcome] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT fingerprint, message_id, thread_id, status, error FROM sends"
                " WHERE account_id = ? AND client_message_id = ?", (account_id, client_message_id)
            ).fetchone()
        if row is None:
            return None
        fingerprint, message_id, thread_id, status, error = row
        status_value: MessageStatus = status
        return fingerprint, SendOutcome(message_id=message_id, status=status_value,
                                        thread_id=thread_id, error=error)

    def put(self, account_id: str, client_message_id: str, fingerprint: str, outcome: SendOutcome) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO sends VALUES (?, ?, ?, ?, ?, ?, ?)",
                (account_id, client_message_id, fingerprint, outcome.message_id, outcome.thread_id,
                 outcome.status, outcome.error),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _fingerprint(client_jid: str, text: str) -> str:
    return hashlib.sha256(f"{client_jid}\0{text}".encode()).hexdigest()


class DaemonActions:
    """Implements ``DaemonControl`` for the running daemon. See the module docstring."""

    def __init__(
        self,
        accounts: Mapping[str, SendingAccount],
        ledger: OutboundLedger,
        *,
        send_wait_s: float = SEND_WAIT_S,
        backfill: BackfillTrigger | None = None,
    ) -> None:
        self.accounts = accounts
        self.ledger = ledger
        self.send_wait_s = send_wait_s
        self.backfill = backfill
        self._bridge: ActionBridge | None = None
        self._nursery: trio.Nursery | None = None
        self._claims: dict[str, trio.Lock] = {}
        self._deliveries = 0
        self._settled = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The supervised child: owns the nursery deliveries run in."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._bridge = ActionBridge.current()
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._bridge = None

    # -- DaemonControl (called on the HTTP loop) -----------------------------------------------
    async def send_text(self, account_id: str, to: str, text: str,
                        client_message_id: str | None) -> SendOutcome:
        return await self._bridged().call(self._send, account_id, to, text, client_message_id)

    async def trigger_backfill(self, account_id: str) -> BackfillStart:
        return await self._bridged().call(self._trigger_backfill, account_id)

    def _bridged(self) -> ActionBridge:
        if self._bridge is None:
            raise DaemonUnavailable("the daemon is not running its actions")
        return self._bridge

    # -- in trio -------------------------------------------------------------------------------
    async def _send(self, account_id: str, to: str, text: str, client_message_id: str | None) -> SendOutcome:
        runtime = self.accounts.get(account_id)
        if runtime is None:
            raise AccountNotHere(account_id, None)
        try:
            client_jid = outbound.recipient_jid(to)
        except outbound.InvalidRecipient as exc:
            raise BadRecipient(str(exc)) from None
        ctx = runtime.ctx
        fingerprint = _fingerprint(ctx.identity.canonical(client_jid), text)
        lock = self._claims.setdefault(account_id, trio.Lock())
        async with lock:  # one claim at a time per account: a concurrent retry sees the record
            if client_message_id is not None:
                known = await trio.to_thread.run_sync(self.ledger.get, account_id, client_message_id)
                if known is not None:
                    if known[0] != fingerprint:
                        raise ClientMessageIdReused()
                    return known[1]
            if ctx.status.state != "connected":
                raise NotConnected(account_id, ctx.status.state)
            nursery = self._nursery
            if nursery is None:
                raise DaemonUnavailable("the daemon is stopping")
            queued = await outbound.queue_text(ctx, client_jid, text)
            first = SendOutcome(message_id=queued.local_id, status="queued", thread_id=queued.thread_id)
            if client_message_id is not None:
                await trio.to_thread.run_sync(self.ledger.put, account_id, client_message_id,
                                              fingerprint, first)
        settled: list[SendOutcome] = []
        done = trio.Event()

        async def deliver() -> None:
            self._deliveries += 1
            try:
                result = await outbound.deliver(ctx, runtime.transport, queued)
                outcome = SendOutcome(message_id=result.message_id, status=result.status,
                                      thread_id=result.thread_id, error=result.error)
                if client_message_id is not None:
                    await trio.to_thread.run_sync(self.ledger.put, account_id, client_message_id,
                                                  fingerprint, outcome)
                settled.append(outcome)
            finally:
                done.set()
                self._deliveries -= 1
                if not self._deliveries:
                    self._settled.set()
                    self._settled = trio.Event()

        nursery.start_soon(deliver)
        with trio.move_on_after(self.send_wait_s):
            await done.wait()
        return settled[0] if settled else first

    async def wait_settled(self) -> None:
        """Until no delivery is in progress (tests; a fresh Event per wait, none is missed)."""
        while self._deliveries:
            await self._settled.wait()

    async def _trigger_backfill(self, account_id: str) -> BackfillStart:
        if account_id not in self.accounts:
            raise AccountNotHere(account_id, None)
        if self.backfill is None:
            raise BackfillUnavailable("no backfill scheduler runs in this daemon: nothing was started")
        return await self.backfill(account_id)
