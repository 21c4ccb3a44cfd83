"""``wadaemon demo``: the daemon on the embedded store with simulated phones.

Each simulated account pairs (a history sync of ``messages`` messages in several chunks), then
keeps a trickle of live traffic going, so threads visibly fill in. Nothing leaves loopback.
"""

from __future__ import annotations

import msgspec
import trio

from wadaemon.config import Settings
from wadaemon.daemon import Daemon, fixed_transports
from wadaemon.store import close_store, open_store
from wadaemon.store.contract import StoreUnavailable
from wadaemon.whatsapp.simphone import SimPhone

REPORT_EVERY_S = 3.0
LIVE_RATE_PER_S = 2.0


async def run_demo(settings: Settings, accounts: int, messages: int, seconds: float) -> int:
    if settings.store_backend == "sqlite":
        settings = msgspec.structs.replace(settings, data_dir=settings.data_dir / "demo")
    store = open_store(settings)
    phones = {
        f"demo-{n}": SimPhone(f"demo-{n}", seed=n, chats=max(8, messages // 100), history_messages=messages)
        for n in range(1, accounts + 1)
    }
    daemon = Daemon(settings, store, list(phones), fixed_transports(phones))
    base = f"http://{settings.host}:{settings.port}"
    try:
        async with trio.open_nursery() as nursery:

            async def daemon_then_stop(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                # When the daemon ends (SIGTERM, SIGINT), so does the demo and its reporter.
                await daemon.run(task_status=task_status)
                nursery.cancel_scope.cancel()

            await nursery.start(daemon_then_stop)
            print(f"\nwadaemon demo: {accounts} simulated phones, store={store.backend}"
                  f" ({settings.data_dir}), HTTP on {base}\n"
                  f"  curl {base}/ready\n  curl {base}/diag\n  curl {base}/health\n"
                  "Ctrl-C stops it.\n", flush=True)
            for phone in phones.values():
                phone.run_live(LIVE_RATE_PER_S, 24 * 3600)
            nursery.start_soon(_report, daemon)
            if seconds:
                await trio.sleep(seconds)
                daemon.stop()  # the ordered stop; daemon_then_stop ends the demo after it
    finally:
        close_store(store)
    return 0


async def _report(daemon: Daemon) -> None:
    """Every few seconds, one line per account: threads, messages written, newest thread."""
    while True:
        await trio.sleep(REPORT_EVERY_S)
        for account_id in daemon.known_accounts():
            try:
                threads = await daemon.runner.read(daemon.store.list_threads, account_id, limit=500)
            except StoreUnavailable as exc:  # an outage is something to show, not a crash
                print(f"[demo] {account_id}: store unavailable ({exc}); the journal keeps everything,"
                      f" backlog={daemon.board.account(account_id).journal_backlog}", flush=True)
                continue
            status = daemon.board.account(account_id)
            newest = threads[0] if threads else None
            print(f"[demo] {account_id}: threads={len(threads)} history={status.history.saved}"
                  f" ({status.history.progress}%) realtime={status.realtime_written}"
                  f" backlog={status.journal_backlog}"
                  + (f" newest={newest.display_name or newest.client_jid!r}" if newest else ""), flush=True)
