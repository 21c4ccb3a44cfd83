"""The daemon: the root of the supervision tree.

::

    wadaemon                 one_for_one
    ├── control              the actions HTTP may ask for: sends, backfill triggers
    ├── http                 aiohttp on its own thread (/health, /ready, /diag, API)
    ├── accounts             one_for_one, one subtree per account this instance owns
    │                        (wadaemon.actors.account), started and stopped by ownership
    ├── ownership            account leases, heartbeat, fair share (wadaemon.cluster.ownership)
    ├── auto-backfill        older history, thread repair (wadaemon.schedulers.auto_backfill)
    ├── recent-sync          the gap filler (wadaemon.schedulers.recent_sync)
    └── systemd              READY / WATCHDOG / STATUS / STOPPING (only under NOTIFY_SOCKET)

The set of accounts is dynamic: an account's subtree runs only while this instance holds the
account's ownership lease, inside that lease's fence (``wadaemon.cluster.fence``), so losing
the lease stops the socket and refuses the writes. ``accounts`` given to the daemon is the
set it may run (every paired session, or ``WADAEMON_ACCOUNTS``), re-read every retry period.
The schedulers see the accounts through ``RunningAccounts`` (``running_accounts``,
``changed``): the accounts running here under a valid lease, woken as they arrive and leave.
``RECENT_SYNC_ENABLED=false`` leaves recent-sync out; auto-backfill switched off still runs,
for manual (HTTP) triggers only.

Shutdown (SIGTERM/SIGINT or ``stop``) is ordered and bounded, so the process is gone within
30 s whatever the store does (systemd's stop timeout would SIGKILL it otherwise):

1. /ready turns 503 — the HTTP listener stays up through the drain, so a load balancer sees
   "draining", not "connection refused";
2. the schedulers, then ownership are stopped: ownership stops every account subtree (its
   transport first, then the pipeline commits what the transport handed over, within
   ``DRAIN_S``, under the still-valid lease; then the subtree is cancelled), then
   releases every lease and deletes the heartbeat, so the others take over at once; if that
   takes longer than ``ACCOUNTS_STOP_S`` (a frozen store), the store calls still in flight are
   abandoned (``StoreRunner.abandon``) and the accounts get ``ABANDON_GRACE_S`` more to unwind;
3. the rest of the tree (HTTP) is cancelled: the listener closes last;
4. the journals close, and the log says how many entries each still holds.

Whatever was not flushed is still in the journal and is replayed when this instance runs the
account again. A second signal skips the wait: store calls are abandoned and everything is
cancelled at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from supervisors import ChildSpec, Supervisor
from wadaemon.actors.account import AccountRuntime
from wadaemon.cluster.fence import Fence
from wadaemon.cluster.ownership import Ownership
from wadaemon.cluster.timing import LeaseTiming
from wadaemon.config import Settings
from wadaemon.control import DaemonActions, OutboundLedger, backfill_trigger
from wadaemon.metrics import Metrics
from wadaemon.schedulers.auto_backfill import AutoBackfill
from wadaemon.schedulers.lease import WallClock
from wadaemon.schedulers.recent_sync import RecentSync
from wadaemon.status import DaemonStatus
from wadaemon.store.contract import Store
from wadaemon.store.runner import LeaseLost, StoreRunner
from wadaemon.systemd import Notifier, run_notifier
from wadaemon.whatsapp.transport import Licence, Transport

log = logging.getLogger("wadaemon")

#: An account's transport, given the account and the licence it reconnects under (its fence).
TransportFactory = Callable[[str, Licence], Transport]


def fixed_transports(transports: Mapping[str, Transport]) -> TransportFactory:
    """Transports made in advance (the demo, tests): simulated phones that never reconnect by
    themselves, so the licence is not theirs to ask."""
    return lambda account_id, _licence: transports[account_id]

#: Shutdown budget for the accounts' own flushes before store calls are abandoned, and the
#: grace after that. With the HTTP stop (<= 7 s) and the store close (<= 3 s) this stays
#: within the 30 s a stop may take.
ACCOUNTS_STOP_S = 12.0
#: The children stopped, in this order, while /ready says 503; the rest (HTTP, control, systemd)
#: are cancelled after them.
DRAINED_FIRST = ("recent-sync", "auto-backfill", "ownership", "accounts")
ABANDON_GRACE_S = 3.0
#: How long a graceful stop of one account waits for its pipeline to commit what the socket
#: handed over (``Daemon._drain``), inside ownership's shutdown bound.
DRAIN_S = 5.0


class Daemon:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        accounts: Sequence[str] | Callable[[], Sequence[str]],
        transport_factory: TransportFactory,
        *,
        serve: bool = True,
        notifier: Notifier | None = None,
        clock: WallClock | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.board = DaemonStatus(settings.instance_id)
        self.metrics = Metrics(self.board)
        self.runner = StoreRunner(store, on_write=self.metrics.observe_write)
        self.clock: WallClock = clock or (lambda: int(time.time() * 1000))
        self._changed = trio.Event()
        self.accounts: dict[str, AccountRuntime] = {}
        self._left: dict[str, int] = {}  # journal entries left by accounts stopped here
        self._transport_factory = transport_factory
        universe: Callable[[], Sequence[str]]
        if callable(accounts):
            universe = accounts
        else:
            fixed = list(accounts)
            universe = lambda: fixed  # noqa: E731
        self.known_accounts = universe  # the accounts this daemon may run (it runs those it owns)
        self.account_tree = Supervisor("accounts", [], strategy="one_for_one")
        self.ownership = Ownership(
            store=store, host=self, board=self.board, instance_id=settings.instance_id,
            timing=LeaseTiming.of(settings), accounts=universe,
            pinned=settings.accounts,
        )
        self.auto_backfill = AutoBackfill(settings, self.runner, self, board=self.board, clock=self.clock)
        self.recent_sync = RecentSync(settings, self.runner, self, board=self.board, clock=self.clock)
        # The same (dynamic) mapping: an account is sendable exactly while it runs here.
        self.control = DaemonActions(
            self.accounts, OutboundLedger(settings.data_dir / "outbound.sqlite"),
            backfill=backfill_trigger(self.auto_backfill, lambda a: self.board.account(a).state))
        self.serve = serve
        self.http: Any = None
        self.notifier = Notifier.from_environ() if notifier is None else notifier
        self._ready = trio.Event()
        self._stop_requested = trio.Event()
        self.root = Supervisor("wadaemon", self._children(), strategy="one_for_one")
        self.board.set_supervision(self.root.snapshot)

    def _children(self) -> list[ChildSpec]:
        children: list[ChildSpec] = [ChildSpec("control", self.control.run)]
        if self.serve:
            from wadaemon.http.server import HttpServer, serve_http  # aiohttp only when serving

            self.http = HttpServer(
                self.settings.host, self.settings.port, self.board, self.store, None,
                metrics=self.metrics, settings=self.settings, control=self.control)
            server = self.http

            async def http(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                await serve_http(server, task_status=task_status)

            children.append(ChildSpec("http", http))
        children.append(ChildSpec("accounts", self.account_tree.run))
        children.append(ChildSpec("ownership", self.ownership.run))
        children.append(ChildSpec("auto-backfill", self.auto_backfill.run))  # manual runs even when off
        if self.settings.recent_sync_enabled:
            children.append(ChildSpec("recent-sync", self.recent_sync.run))
        if self.notifier.enabled:
            notifier, board, ready = self.notifier, self.board, self._ready

            async def systemd(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                await run_notifier(notifier, board, ready, task_status=task_status)

            children.append(ChildSpec("systemd", systemd))
        return children

    # -- wadaemon.schedulers.view.RunningAccounts: what the schedulers see -------------------------
    def running_accounts(self) -> list[AccountRuntime]:
        """The accounts this instance runs now, under a valid lease: the only ones schedulers
        (backfill, recent-sync, repair) may work on."""
        owned = self.ownership.running()
        return [runtime for account_id, runtime in self.accounts.items() if account_id in owned]

    def changed(self) -> trio.Event:
        return self._changed

    def _accounts_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- AccountHost (driven by ownership) --------------------------------------------------------
    async def start_account(self, account_id: str, fence: Fence) -> None:
        runtime = AccountRuntime(
            account_id,
            settings=self.settings,
            runner=self.runner,
            board=self.board,
            transport=self._transport_factory(account_id, fence.valid),
            journal_dir=self.settings.data_dir / "journal",
            on_change=self._accounts_changed,
            clock=self.clock,
        )
        self.runner.fence(account_id, fence)
        self.accounts[account_id] = runtime

        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with fence.scope:
                    await runtime.supervisor.run(task_status=task_status)
            finally:
                runtime.close()

        try:
            await self.account_tree.start_child(ChildSpec(f"account:{account_id}", run, restart="temporary"))
        finally:
            self._accounts_changed()

    async def stop_account(self, account_id: str) -> None:
        runtime = self.accounts.get(account_id)
        if runtime is not None:
            await self._drain(account_id, runtime)
        with contextlib.suppress(KeyError):
            await self.account_tree.stop_child(f"account:{account_id}")
        runtime = self.accounts.pop(account_id, None)
        if runtime is not None:
            self._left[account_id] = runtime.journal.backlog()  # for the log line at exit
            runtime.close()
        self.board.forget(account_id)
        self._accounts_changed()

    async def _drain(self, account_id: str, runtime: AccountRuntime) -> None:
        """A graceful stop (a hand-over, a shutdown) under a lease still held: the socket
        first, then the pipeline commits what the socket had handed over, and only then is the
        subtree cancelled. Cancelling at once would leave the last events received in the
        journal, for the next owner to recover from the phone (recent-sync), or never, if this
        instance never runs the account again. Bounded by ``DRAIN_S`` (a slow store leaves the
        rest journaled); a lost lease skips it (its writes would be refused anyway)."""
        try:
            self.runner.check_fence(account_id)
        except LeaseLost:
            return
        with trio.move_on_after(DRAIN_S):
            with contextlib.suppress(KeyError):
                await runtime.supervisor.stop_child("socket")
            await runtime.wait_drained()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled, ``stop()``, SIGTERM or SIGINT (see the module docstring)."""
        log.info("wadaemon starting instance=%s store=%s pinned=%s",
                 self.settings.instance_id, self.store.backend, ",".join(self.settings.accounts) or "-")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                nursery.start_soon(self._stop_when_requested, nursery.cancel_scope)
                await nursery.start(self.root.run)
                if not self._stop_requested.is_set():
                    self.board.set_mode("active" if self.accounts else "passive")
                log.info("wadaemon ready mode=%s accounts=%s", self.board.mode, ",".join(self.accounts) or "-")
                self._ready.set()
                task_status.started()
        finally:
            self.board.set_mode("stopping")
            left = {**self._left, **{account_id: runtime.journal.backlog()
                                     for account_id, runtime in self.accounts.items()}}
            for runtime in self.accounts.values():
                runtime.close()
            self.control.ledger.close()
            self.notifier.close()
            log.info("wadaemon stopped journalEntriesLeft=%d%s", sum(left.values()),
                     "".join(f" {a}={n}" for a, n in left.items() if n))

    def stop(self) -> None:
        """Begin the ordered shutdown; ``run`` returns once it is done."""
        self.board.set_mode("stopping")
        self._stop_requested.set()

    async def _stop_when_requested(self, scope: trio.CancelScope) -> None:
        await self._stop_requested.wait()
        # At once, not when the notifier child is cancelled after the drain: from here on
        # systemd bounds the stop by TimeoutStopSec instead of the watchdog.
        self.notifier.send(stopping="1", status="stopping: flushing pending writes")
        await self._stop_accounts()
        scope.cancel()

    async def _stop_accounts(self) -> None:
        stopped = trio.Event()

        async def stop() -> None:
            for name in DRAINED_FIRST:
                with contextlib.suppress(KeyError):  # a scheduler that is disabled
                    await self.root.stop_child(name)
            stopped.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop)
            with trio.move_on_after(ACCOUNTS_STOP_S):
                await stopped.wait()
            if not stopped.is_set():
                log.warning("wadaemon stop: accounts still flushing after %.0fs: abandoning %d store"
                            " call(s); what they held stays journaled", ACCOUNTS_STOP_S, self.runner.abandon())
                with trio.move_on_after(ABANDON_GRACE_S):
                    await stopped.wait()
            nursery.cancel_scope.cancel()

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self._stop_requested.is_set():
                    log.info("wadaemon received %s: stopping", name)
                    self.stop()
                    continue
                log.warning("wadaemon received %s again: stopping now, abandoning %d store call(s)",
                            name, self.runner.abandon())
                scope.cancel()
                return
