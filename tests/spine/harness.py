"""Run the real daemon (journal, translation, actors, store) against simulated phones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from wadaemon.config import Settings, load_settings
from wadaemon.daemon import Daemon, fixed_transports
from wadaemon.domain import MessageDoc, ThreadDoc
from wadaemon.schedulers.lease import WallClock
from wadaemon.store.contract import Store
from wadaemon.whatsapp.simphone import SimPhone
from wadaemon.whatsapp.transport import Transport


def settings_for(data_dir: Path, **env: str) -> Settings:
    return load_settings({"WADAEMON_DATA_DIR": str(data_dir), "INSTANCE_ID": "test-1", **env})


@asynccontextmanager
async def running(settings: Settings, store: Store, transports: dict[str, Transport], *,
                  serve: bool = False, clock: WallClock | None = None) -> AsyncIterator[Daemon]:
    """The daemon, started (tree up) for the body, stopped after it; ``serve``: with its HTTP
    server (give ``PORT`` a free loopback port); ``clock``: its wall clock (epoch ms)."""
    daemon = Daemon(settings, store, list(transports), fixed_transports(transports), serve=serve, clock=clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        try:
            yield daemon
        finally:
            daemon.stop()


async def settle(daemon: Daemon, phones: Sequence[SimPhone]) -> None:
    """Until every phone delivered what it has queued and each journal is drained."""
    for phone in phones:
        assert await trio.to_thread.run_sync(phone.wait_idle, 60.0), "phone never went idle"
    with trio.fail_after(120):
        for runtime in daemon.accounts.values():
            await runtime.wait_drained()


def dump(store: Store, account_id: str) -> dict[str, tuple[ThreadDoc, list[MessageDoc]]]:
    """Every thread of an account with all its messages, oldest first."""
    threads = store.list_threads(account_id, limit=10_000)
    out = {}
    for thread in threads:
        tid = f"{account_id}__{thread.client_jid}"
        out[tid] = (thread, store.list_messages(tid, limit=100_000, order="asc"))
    return out
