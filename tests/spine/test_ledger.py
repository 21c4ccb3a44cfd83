"""The journal entry ledger settles an entry only when all its pieces are committed."""

from __future__ import annotations

from collections.abc import Sequence

from wadaemon.actors.work import EntryLedger


async def test_entry_settles_after_its_last_piece() -> None:
    done: list[int] = []
    progressed: list[bool] = []

    async def mark_done(seqs: Sequence[int]) -> None:
        done.extend(seqs)

    ledger = EntryLedger(mark_done, on_progress=lambda: progressed.append(True))
    ledger.expect(1, 2)
    ledger.expect(2, 1)
    await ledger.settle([1])
    assert done == [] and ledger.outstanding() == 2
    await ledger.settle([2, 1])
    assert sorted(done) == [1, 2]
    assert ledger.outstanding() == 0
    assert progressed


async def test_unknown_entries_settle_at_once_and_reset_forgets() -> None:
    done: list[int] = []

    async def mark_done(seqs: Sequence[int]) -> None:
        done.extend(seqs)

    ledger = EntryLedger(mark_done)
    await ledger.settle([9])
    assert done == [9]
    ledger.expect(3, 5)
    ledger.reset()
    assert ledger.outstanding() == 0
