"""The daemon: the root of the supervision tree.

::

    wadaemon                 one_for_one
    ├── control              the actions HTTP may ask for: sends, backfill triggers
    ├── http                 aiohttp on its own thread (/health, /ready, /diag, API)
    ├── accounts             one_for_one, one subtree per account (wadaemon.actors.account)
    └── systemd              READY / WATCHDOG / STATUS / STOPPING (only under NOTIFY_SOCKET)

Global scheduler actors (auto-backfill, recent-sync, repair, leases) join the root as siblings
of ``accounts`` when their issues land.

Shutdown (SIGTERM/SIGINT or ``stop``) is ordered and bounded, so the process is gone within
30 s whatever the store does (systemd's stop timeout would SIGKILL it otherwise):

1. /ready turns 503 — the HTTP listener stays up through the drain, so a load balancer sees
   "draining", not "connection refused";
2. the ``accounts`` subtree is stopped: each writer flushes what it holds (each within its own
   bound), each transport stops (bounded too); if that takes longer than ``ACCOUNTS_STOP_S``
   (a frozen store), the store calls still in flight are abandoned (``StoreRunner.abandon``)
   and the accounts get ``ABANDON_GRACE_S`` more to unwind;
3. the rest of the tree (HTTP) is cancelled: the listener closes last;
4. the journals close, and the log says how many entries each still holds.

Whatever was not flushed is still in the journal and is replayed at the next start. A second
signal skips the wait: store calls are abandoned and everything is cancelled at once.
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

#: Shutdown budget for the accounts' own flushes before store calls are abandoned, and the
#: grace after that. With the HTTP stop (<= 7 s) and the store close (<= 3 s) this stays
#: within the 30 s a stop may take.
ACCOUNTS_STOP_S = 12.0
ABANDON_GRACE_S = 3.0


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
        """Run until cancelled, ``stop()``, SIGTERM or SIGINT (see the module docstring)."""
        log.info("wadaemon starting instance=%s store=%s accounts=%s",
                 self.settings.instance_id, self.store.backend, ",".join(self.accounts) or "-")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                nursery.start_soon(self._stop_when_requested, nursery.cancel_scope)
                await nursery.start(self.root.run)
                if not self._stop_requested.is_set():
                    self.board.set_mode("active" if self.accounts else "passive")
                log.info("wadaemon ready mode=%s", self.board.mode)
                self._ready.set()
                task_status.started()
        finally:
            self.board.set_mode("stopping")
            left = {account_id: runtime.journal.backlog() for account_id, runtime in self.accounts.items()}
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
            await self.root.stop_child("accounts")
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
