"""The daemon: the root of the supervision tree.

::

    wadaemon                 one_for_one
    ├── control              the actions HTTP may ask for: sends, backfill triggers
    ├── http                 aiohttp on its own thread (/health, /ready, /diag, API)
    ├── accounts             one_for_one, one subtree per account this instance owns
    │                        (wadaemon.actors.account), started and stopped by ownership
    ├── ownership            account leases, heartbeat, fair share (wadaemon.cluster.ownership)
    └── systemd              READY / WATCHDOG / STATUS / STOPPING (only under NOTIFY_SOCKET)

The set of accounts is dynamic: an account's subtree runs only while this instance holds the
account's ownership lease, inside that lease's fence (``wadaemon.cluster.fence``), so losing
the lease stops the socket and refuses the writes. ``accounts`` given to the daemon is the
set it may run (every paired session, or ``WADAEMON_ACCOUNTS``), re-read every retry period.

Shutdown (SIGTERM/SIGINT or ``stop``): /ready turns 503, the tree is cancelled, every writer
flushes what it holds within its own bound (the leases are still valid), then ownership
releases every lease and deletes the heartbeat. Whatever was not flushed is still in the
journal and is replayed when this instance runs the account again.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Any

import trio

from supervisors import ChildSpec, Supervisor
from wadaemon.actors.account import AccountRuntime
from wadaemon.cluster.fence import Fence
from wadaemon.cluster.ownership import Ownership
from wadaemon.cluster.timing import LeaseTiming
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
        accounts: Sequence[str] | Callable[[], Sequence[str]],
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
        self.accounts: dict[str, AccountRuntime] = {}
        self._transport_factory = transport_factory
        universe: Callable[[], Sequence[str]]
        if callable(accounts):
            universe = accounts
        else:
            fixed = list(accounts)
            universe = lambda: fixed  # noqa: E731
        self.account_tree = Supervisor("accounts", [], strategy="one_for_one")
        self.ownership = Ownership(
            store=store, host=self, board=self.board, instance_id=settings.instance_id,
            timing=LeaseTiming.of(settings), accounts=universe,
            pinned=settings.accounts,
        )
        # The same (dynamic) mapping: an account is sendable exactly while it runs here.
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
        children.append(ChildSpec("accounts", self.account_tree.run))
        children.append(ChildSpec("ownership", self.ownership.run))
        if self.notifier.enabled:
            notifier, board, ready = self.notifier, self.board, self._ready

            async def systemd(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                await run_notifier(notifier, board, ready, task_status=task_status)

            children.append(ChildSpec("systemd", systemd))
        return children

    def owned_accounts(self) -> frozenset[str]:
        """The accounts this instance runs now, under a valid lease: the only ones schedulers
        (backfill, recent-sync, repair) may work on."""
        return self.ownership.running()

    # -- AccountHost (driven by ownership) --------------------------------------------------------
    async def start_account(self, account_id: str, fence: Fence) -> None:
        runtime = AccountRuntime(
            account_id,
            settings=self.settings,
            runner=self.runner,
            board=self.board,
            transport=self._transport_factory(account_id),
            journal_dir=self.settings.data_dir / "journal",
        )
        self.runner.fence(account_id, fence)
        self.accounts[account_id] = runtime

        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with fence.scope:
                    await runtime.supervisor.run(task_status=task_status)
            finally:
                runtime.close()

        await self.account_tree.start_child(ChildSpec(f"account:{account_id}", run, restart="temporary"))

    async def stop_account(self, account_id: str) -> None:
        with contextlib.suppress(KeyError):
            await self.account_tree.stop_child(f"account:{account_id}")
        runtime = self.accounts.pop(account_id, None)
        if runtime is not None:
            runtime.close()
        self.board.forget(account_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled, ``stop()``, SIGTERM or SIGINT."""
        log.info("wadaemon starting instance=%s store=%s pinned=%s",
                 self.settings.instance_id, self.store.backend, ",".join(self.settings.accounts) or "-")
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                    await nursery.start(self.root.run)
                    self.board.set_mode("active" if self.accounts else "passive")
                    log.info("wadaemon ready mode=%s accounts=%s", self.board.mode, ",".join(self.accounts) or "-")
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
