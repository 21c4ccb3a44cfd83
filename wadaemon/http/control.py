"""``DaemonControl``: the one narrow way an HTTP handler makes the daemon *do* something.

Reads go to the store (through ``store_access``) and the status board; actions — send a
message, start a backfill — go through this protocol and nothing else. ``http/`` never
imports ``actors/``: the daemon builds the implementation (``wadaemon.control``) and hands it
to the server, and tests hand in a fake. Methods are coroutines on the HTTP loop; the
implementation crosses into trio itself (``ActionBridge``).

Refusals are ``ControlError``s, which carry their HTTP status and code (they are ``ApiError``s),
so a handler simply lets them through: one place decides what "not connected" answers.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from wadaemon.domain import MessageStatus
from wadaemon.http.errors import ApiError


class SendOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Where a send stands. ``queued`` after the wait means "not known yet": the send is still
    in progress and settles later to ``sent`` (under WhatsApp's id) or ``failed``."""

    message_id: str
    status: MessageStatus
    thread_id: str
    error: str = ""


class BackfillStart(msgspec.Struct, frozen=True):
    #: False: a run was already going for this account (nothing new was started).
    started: bool
    detail: str = ""


class ControlError(ApiError):
    """An action refused by the daemon, with the status the client gets."""


class AccountNotHere(ControlError):
    def __init__(self, account_id: str, owner: str | None) -> None:
        where = f"instance {owner}" if owner else "another instance"
        super().__init__(409, "account_not_here",
                         f"account {account_id} is not run by this instance (owner: {where}); "
                         "send through the instance that runs it")


class NotConnected(ControlError):
    def __init__(self, account_id: str, state: str) -> None:
        super().__init__(409, "not_connected",
                         f"account {account_id} is {state}, not connected: nothing was sent or "
                         "queued; retry once it is connected")


class BadRecipient(ControlError):
    def __init__(self, message: str) -> None:
        super().__init__(400, "bad_recipient", message)


class ClientMessageIdReused(ControlError):
    def __init__(self) -> None:
        super().__init__(409, "client_message_id_reused",
                         "this clientMessageId was already used for a different message")


class BackfillUnavailable(ControlError):
    """No backfill scheduler runs (or it is disabled): a 409, because it is this daemon's
    configuration, not a passing outage, that refuses the request."""

    def __init__(self, reason: str) -> None:
        super().__init__(409, "backfill_unavailable", reason)


class DaemonControl(Protocol):
    async def send_text(self, account_id: str, to: str, text: str,
                        client_message_id: str | None) -> SendOutcome:
        """Send a text (idempotent by ``client_message_id``)."""
        ...

    async def trigger_backfill(self, account_id: str) -> BackfillStart:
        """Start a manual backfill now: bypasses the cooldown, never the lock."""
        ...
