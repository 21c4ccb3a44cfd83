"""The daemon: the root of the supervision tree.

::

    wadaemon                 one_for_one
    ├── control              the actions HTTP may ask for: sends, backfill triggers
    ├── http                 aiohttp on its own thread (/health, /ready, /diag, API)
    ├── accounts             one_for_one, one subtree per account (wadaemon.actors.account)
    └── systemd              READY / WATCHDOG / STATUS / STOPPING (only under NOTIFY_SOCKET)

Global scheduler actors (auto-backfill, recent-sync, repair, leases) join the root as siblings
of ``accounts`` when their issues land. Shutdown (SIGTERM/SIGINT or ``stop``): /ready turns 503,
the tree is cancelled, every writer flushes what it holds within its own bound, the journals
close. Whatever was not flushed is still in the journal and is replayed at the next start.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from typing import Any

import trio

from supervisors import ChildSpec, Supervisor
from wadaemon.actors.account import AccountRuntime
from wadaemon.config import Settings
from wadaemon.control import DaemonActions, OutboundLedger
from wadaemon.metrics import Metrics
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
    ) -> None:
        self.settings = settings
        self.store = store
        self.board = DaemonStatus(settings.instance_id)
        self.metrics = Metrics(self.board)
        self.runner = StoreRunner(store, on_write=self.metrics.observe_write)
        self.accounts: dict[str, AccountRuntime] = {
            account_id: AccountRuntime(
                account_id,
                settings=settings,
                runner=self.runner,
                board=self.board,
                transport=transport_factory(account_id),
                journal_dir=settings.data_dir / "journal",
            )
            for account_id in accounts
        }
        self.control = DaemonActions(
            self.accounts, OutboundLedger(settings.data_dir / "outbound.sqlite"))
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
        if self.notifier.enabled:
            notifier, board, ready = self.notifier, self.board, self._ready

            async def systemd(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                await run_notifier(notifier, board, ready, task_status=task_status)

            children.append(ChildSpec("systemd", systemd))
        return children

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
