"""What the schedulers see of the accounts this instance runs, and what the HTTP API calls.

The schedulers never reach into an account's actors: they see ``ScheduledAccount`` (connection
state, the phone's request registry, a way to send a request) through ``RunningAccounts``. Today
the daemon runs a fixed set (``Daemon.accounts``); with ownership leases the set becomes
dynamic, and only ``RunningAccounts`` changes: ``changed()`` wakes the schedulers when an
account connects, disconnects, arrives or leaves.

``BackfillControl`` is the narrow protocol the HTTP API calls for a manual backfill (``http/``
never imports actors or schedulers' internals: it receives an object with this one method).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import trio

from wadaemon.actors.ondemand import OnDemandRequests
from wadaemon.domain import MessageDoc, SyncGap
from wadaemon.status import AccountStatus

#: ``started``: a run began now; ``queued``: every slot is busy, it starts when one frees
#: (the lock is still taken then); ``running``: a run of this account is already in flight
#: here; ``running_elsewhere``: another instance holds the account's backfill lock;
#: ``unavailable``: this account's transport cannot request history (nothing to run);
#: ``not_connected``: the phone is not connected (nothing could be asked);
#: ``unknown_account``: this instance does not run the account.
TriggerOutcome = Literal["started", "queued", "running", "running_elsewhere", "unavailable",
                         "not_connected", "unknown_account"]


class BackfillControl(Protocol):
    async def trigger_backfill(self, account_id: str) -> TriggerOutcome:
        """Start a backfill of ``account_id`` now (manual: bypasses cooldown and backoff,
        never the backfill lock). Returns at once; the run continues in the background."""
        ...


class ScheduledAccount(Protocol):
    account_id: str
    requests: OnDemandRequests
    status: AccountStatus

    @property
    def connected(self) -> bool: ...

    @property
    def connects(self) -> int:
        """How many times the account has connected since start (a new connect: jitter, run)."""
        ...

    @property
    def history_requests_available(self) -> bool: ...

    def open_gaps(self) -> list[SyncGap]:
        """The account's open gaps (durable in ``accounts/*.syncGaps``), oldest first."""
        ...

    def close_gaps(self, gaps: Sequence[SyncGap]) -> None:
        """Recent-sync worked these off (or they left the look-back window)."""
        ...

    async def request_history(self, chat_jid: str, anchor: MessageDoc, count: int) -> None:
        """Ask the phone for ``count`` messages older than ``anchor`` (worker thread)."""
        ...


class RunningAccounts(Protocol):
    def running_accounts(self) -> Sequence[ScheduledAccount]: ...

    def changed(self) -> trio.Event:
        """An Event set at the next change (connect, disconnect, account added or removed).
        Take it *before* looking at the accounts, so no change is missed."""
        ...
