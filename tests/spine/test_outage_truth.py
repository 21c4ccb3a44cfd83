"""During a store outage /diag tells the truth: the journal backlog is read live, and a store
that does not answer shows in lastError before its first call fails."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import trio

from tests.spine.harness import running, settings_for, settle
from wadaemon.status import STORE_SLOW_MS, with_store_wait
from wadaemon.store.contract import Store
from wadaemon.whatsapp.simphone import SimPhone

ACCOUNT = "acct"


class HangingStore:
    """``upsert_messages`` blocks (like an RPC waiting out its deadline) until ``release``."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.hang = threading.Event()
        self.release = threading.Event()
        self.waiting = threading.Event()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != "upsert_messages":
            return attr

        def upsert(docs: Any) -> Any:
            if self.hang.is_set():
                self.waiting.set()
                self.release.wait(60)
            return attr(docs)

        return upsert


async def test_backlog_is_live_and_a_silent_store_shows_in_last_error(tmp_path: Path, sqlite_store: Store) -> None:
    store = HangingStore(sqlite_store)
    phone = SimPhone(ACCOUNT, seed=2, chats=4, history_messages=40, chunk_size=20)
    async with running(settings_for(tmp_path / "data"), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        store.hang.set()
        phone.emit_inbound(0, "first")
        assert await trio.to_thread.run_sync(store.waiting.wait, 30.0)
        for n in range(60):
            phone.emit_inbound(n % 4, f"during {n}")
        assert await trio.to_thread.run_sync(phone.wait_idle, 30.0)
        [status] = daemon.board.snapshot().accounts
        assert status.journal_backlog >= 61  # every event handed over, none drained
        assert status.store_waiting_since_ms is not None
        later = with_store_wait(status, status.store_waiting_since_ms + STORE_SLOW_MS + 1000)
        assert "store not answering for 4s" in later.last_error
        assert with_store_wait(status, status.store_waiting_since_ms + 10).last_error == status.last_error
        store.release.set()
        await settle(daemon, [phone])
        [status] = daemon.board.snapshot().accounts
        assert status.journal_backlog == 0 and status.store_waiting_since_ms is None
