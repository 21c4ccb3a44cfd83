"""A full disk under the journal: events are held and retried, /health says degraded, and every
event lands once space is back (a real 2 MB tmpfs; needs root to mount, skipped otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from tests.spine.harness import dump, running, settings_for, settle
from tests.test_journal_hardening import fill, tmpfs
from wadaemon.status import health_problems
from wadaemon.store.contract import Store
from wadaemon.whatsapp.simphone import SimPhone

ACCOUNT = "acct"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_full_disk_holds_live_events_and_loses_none(tmp_path: Path, sqlite_store: Store) -> None:
    with tmpfs(tmp_path / "small", "2m") as disk:
        phone = SimPhone(ACCOUNT, seed=8, chats=5, history_messages=100, chunk_size=50)
        async with running(settings_for(disk), sqlite_store, {ACCOUNT: phone}) as daemon:
            await settle(daemon, [phone])
            runtime = daemon.accounts[ACCOUNT]
            await trio.to_thread.run_sync(fill, disk / "filler")
            sent = [phone.emit_inbound(n % 5, f"while full {n}") for n in range(30)]
            assert await trio.to_thread.run_sync(runtime.sink.appends.wait_held, 1, 30.0)
            status = daemon.board.account(ACCOUNT)
            assert status.held_events >= 1 and "full" in status.journal_error
            assert phone.error is None  # the phone was not told to stop: nothing was refused
            [problem] = health_problems(daemon.board.snapshot().accounts, 0)
            assert "journal refuses appends" in problem
            (disk / "filler").unlink()
            await settle(daemon, [phone])
            assert status.held_events == 0 and status.journal_error == ""
        stored = {m.id for _, (_, ms) in dump(sqlite_store, ACCOUNT).items() for m in ms}
        assert set(sent) <= stored and len(stored) == 130
