"""The daemon: the root of the supervision tree.

::

    wadaemon                 one_for_one
    ├── control              the actions HTTP may ask for: sends, backfill triggers
    ├── http                 aiohttp on its own thread (/health, /ready, /diag, API)
    ├── accounts             one_for_one, one subtree per account (wadaemon.actors.account)
    ├── auto-backfill        older history, thread repair (wadaemon.schedulers.auto_backfill)
    ├── recent-sync          the gap filler (wadaemon.schedulers.recent_sync)
    └── systemd              READY / WATCHDOG / STATUS / STOPPING (only under NOTIFY_SOCKET)

The schedulers see the accounts through ``RunningAccounts`` (``running_accounts``,
``changed``), which this class implements; when the account set becomes dynamic (ownership
leases) only these two methods change. Disabled schedulers (SPEC §2 flags) are not started.

Shutdown (SIGTERM/SIGINT or ``stop``): /ready turns 503,
the tree is cancelled, every writer flushes what it holds within its own bound, the journals
close. Whatever was not flushed is still in the journal and is replayed at the next start.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from supervisors import ChildSpec, Supervisor
from wadaemon.actors.account import AccountRuntime
from wadaemon.config import Settings
from wadaemon.control import DaemonActions, OutboundLedger, backfill_trigger
from wadaemon.metrics import Metrics
from wadaemon.schedulers.auto_backfill import AutoBackfill
from wadaemon.schedulers.lease import WallClock
from wadaemon.schedulers.recent_sync import RecentSync
from wadaemon.status import DaemonStatus
from wadaemon.store.contract import Store
from wadaemon.store.runner import StoreRunner
from wadaemon.systemd import Notifier, run_notifier
from wadaemon.whatsapp.transport import Transport

log = logging.getLogger("wadaemon")

TransportFactory = Callable[[str], Transport]


class Daemon:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        accounts: Sequence[str],
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
        self.accounts: dict[str, AccountRuntime] = {
            account_id: AccountRuntime(
                account_id,
                settings=settings,
                runner=self.runner,
                board=self.board,
                transport=transport_factory(account_id),
                journal_dir=settings.data_dir / "journal",
                on_change=self._accounts_changed,
                clock=self.clock,
            )
            for account_id in accounts
        }
        self.auto_backfill = AutoBackfill(settings, self.runner, self, clock=self.clock)
        self.recent_sync = RecentSync(settings, self.runner, self, clock=self.clock)
        self.control = DaemonActions(
            self.accounts, OutboundLedger(settings.data_dir / "outbound.sqlite"),
            backfill=backfill_trigger(self.auto_backfill, lambda a: self.board.account(a).state))
        self.serve = serve
        self.http: Any = None
        self.notifier = Notifier.from_environ() if notifier is None else notifier
        self._ready = trio.Event()
        self._cancel = trio.CancelScope()
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
        accounts = Supervisor("accounts", [ChildSpec(f"account:{a}", rt.supervisor.run)
                                           for a, rt in self.accounts.items()], strategy="one_for_one")
        children.append(ChildSpec("accounts", accounts.run))
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
        return list(self.accounts.values())

    def changed(self) -> trio.Event:
        return self._changed

    def _accounts_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled, ``stop()``, SIGTERM or SIGINT."""
        log.info("wadaemon starting instance=%s store=%s accounts=%s",
                 self.settings.instance_id, self.store.backend, ",".join(self.accounts) or "-")
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                    await nursery.start(self.root.run)
                    self.board.set_mode("active" if self.accounts else "passive")
                    log.info("wadaemon ready mode=%s", self.board.mode)
                    self._ready.set()
                    task_status.started()
        finally:
            self.board.set_mode("stopping")
            for runtime in self.accounts.values():
                runtime.close()
            self.control.ledger.close()
            self.notifier.close()
            log.info("wadaemon stopped")

    def stop(self) -> None:
        self.board.set_mode("stopping")
        self._cancel.cancel()

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("wadaemon received %s: stopping", signal.Signals(signum).name)
                self.board.set_mode("stopping")
                scope.cancel()
                return
