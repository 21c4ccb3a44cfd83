"""Live messages overtake a history sync: one journaled behind a run of history chunks is
committed after the chunk being written, not after the whole run."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import trio
import trio.testing

from tests.spine.harness import running, settings_for, settle
from wadaemon.store.contract import Store
from wadaemon.whatsapp.simphone import SimPhone

ACCOUNT = "acct"


class GatedStore:
    """Holds the first history write until ``release``; records the order of message writes."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.release = threading.Event()
        self.holding = threading.Event()
        self.order: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != "upsert_messages":
            return attr

        def upsert(docs: Any) -> Any:
            kind = "history" if docs and docs[0].sync_source == "history_sync" else "live"
            if kind == "history" and not self.holding.is_set():
                self.holding.set()
                self.release.wait(30)
            self.order.append(kind)
            return attr(docs)

        return upsert


async def test_a_live_message_is_not_written_after_the_whole_history(tmp_path: Path, sqlite_store: Store) -> None:
    store = GatedStore(sqlite_store)
    phone = SimPhone(ACCOUNT, seed=7, chats=8, history_messages=400, chunk_size=50)  # 8 chunks
    async with running(settings_for(tmp_path / "data"), store, {ACCOUNT: phone}) as daemon:
        assert await trio.to_thread.run_sync(store.holding.wait, 30.0)
        assert await trio.to_thread.run_sync(phone.wait_idle, 30.0)  # every chunk journaled
        phone.emit_inbound(0, "live while history is written")
        assert await trio.to_thread.run_sync(phone.wait_idle, 30.0)
        # Every task idle: the live entry went as far as it can while the gate is shut.
        await trio.testing.wait_all_tasks_blocked(cushion=0.2)
        store.release.set()
        await settle(daemon, [phone])
    live_at = store.order.index("live")
    assert live_at <= 2, store.order  # after the held chunk (and at most the one queued with it)
    assert store.order.count("history") >= 8

