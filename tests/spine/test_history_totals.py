"""historySyncCount and lastHistorySyncResult are cumulative per pairing: across a restart,
a replayed chunk, and a journal started fresh (seeded from the store). Both stores."""

from __future__ import annotations

from pathlib import Path

from tests.spine.harness import running, settings_for, settle
from wadaemon.journal import HistoryTotals, Journal
from wadaemon.store.contract import Store
from wadaemon.whatsapp.simphone import SimPhone
from wadaemon.whatsapp.transport import RawEvent

ACCOUNT = "acct"


def test_a_replayed_chunk_counts_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", max_backlog=10)
    seq = journal.append(RawEvent("HistorySync", b""))
    delta = HistoryTotals(chunks=1, saved=50, skipped=0, errors=0, total=50)
    assert journal.count_history(seq, delta) == delta
    assert journal.count_history(seq, HistoryTotals(chunks=1, saved=0, skipped=50, total=50)) == delta  # replay
    journal.mark_done([seq])
    assert journal.history_totals() == delta
    journal.close()


async def test_totals_survive_a_restart_and_a_fresh_journal(store: Store, tmp_path: Path) -> None:
    data = tmp_path / "data"
    phone = SimPhone(ACCOUNT, seed=6, chats=6, history_messages=300, chunk_size=50)
    async with running(settings_for(data), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        first = daemon.board.account(ACCOUNT).history
        assert (first.saved, first.total) == (300, 300)
        chunks = first.chunks
    again = SimPhone(ACCOUNT, seed=6, chats=6, history_messages=300, chunk_size=50, paired=True)
    async with running(settings_for(data), store, {ACCOUNT: again}) as daemon:
        await settle(daemon, [again])
        after = daemon.board.account(ACCOUNT).history
        assert (after.chunks, after.saved, after.total) == (chunks, 300, 300)
    doc = store.get_account(ACCOUNT)
    assert doc is not None and doc.history_sync_count == chunks
    assert doc.last_history_sync_result is not None and doc.last_history_sync_result.saved == 300
    for leftover in (data / "journal").iterdir():  # a fresh journal: seeded from the store
        leftover.unlink()
    third = SimPhone(ACCOUNT, seed=6, chats=6, history_messages=300, chunk_size=50, paired=True)
    async with running(settings_for(data), store, {ACCOUNT: third}) as daemon:
        await settle(daemon, [third])
        seeded = daemon.board.account(ACCOUNT).history
        assert (seeded.chunks, seeded.saved, seeded.total) == (chunks, 300, 300)
