"""The ingest journal: durable before hand-over, replayed until done, bounded without dropping.

Every test uses a real SQLite file. Waits on threads are bounded by ``WAIT`` only as a failsafe:
each returns as soon as its condition holds, none is a sleep standing in for synchronisation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from wadaemon.journal import Entry, Journal, JournalClosed, JournalCorrupt, JournalReader
from wadaemon.whatsapp.transport import RawEvent

WAIT = 10.0
REPO = Path(__file__).resolve().parents[1]


def ev(i: int) -> RawEvent:
    return RawEvent("Message", f"event-{i}".encode())


def seqs(entries: list[Entry]) -> list[int]:
    return [e.seq for e in entries]


def everything(journal: Journal) -> list[Entry]:
    return journal.read_after(0, 1_000_000)


def test_append_then_reopen_replays_in_order(tmp_path: Path) -> None:
    path = tmp_path / "journal" / "acc.sqlite"
    journal = Journal(path, max_backlog=100, now_ms=lambda: 1234)
    appended = [journal.append(ev(i)) for i in range(5)]
    assert appended == sorted(appended)
    assert journal.backlog() == 5
    journal.close()

    reopened = Journal(path, max_backlog=100)
    assert reopened.backlog() == 5
    assert everything(reopened) == [Entry(seq, ev(i), 1234) for i, seq in enumerate(appended)]
    reopened.close()


def test_mark_done_out_of_order_and_idempotent(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "acc.sqlite", max_backlog=100)
    s = [journal.append(ev(i)) for i in range(6)]
    assert journal.mark_done([s[4], s[1]]) == 2
    assert journal.mark_done([s[5], s[1], s[0]]) == 2  # s[1] already done: ignored, not counted
    assert journal.mark_done([]) == 0
    assert journal.backlog() == 2
    assert seqs(everything(journal)) == [s[2], s[3]]
    journal.close()


def test_done_entries_are_not_replayed_after_reopen_and_seqs_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "acc.sqlite"
    journal = Journal(path, max_backlog=100)
    s = [journal.append(ev(i)) for i in range(4)]
    journal.mark_done([s[0], s[3]])  # s[3] is the newest: its seq must still not come back
    journal.close()

    reopened = Journal(path, max_backlog=100)
    assert seqs(everything(reopened)) == [s[1], s[2]]
    assert reopened.backlog() == 2
    assert reopened.last_seq() == s[3]
    assert reopened.append(ev(9)) > s[3]
    reopened.close()


def test_oldest_pending_ms_follows_the_oldest_undone_entry(tmp_path: Path) -> None:
    clock = iter([100, 200, 300])
    journal = Journal(tmp_path / "acc.sqlite", max_backlog=100, now_ms=lambda: next(clock))
    assert journal.oldest_pending_ms() is None
    s = [journal.append(ev(i)) for i in range(3)]
    assert journal.oldest_pending_ms() == 100
    journal.mark_done([s[1]])
    assert journal.oldest_pending_ms() == 100
    journal.mark_done([s[0]])
    assert journal.oldest_pending_ms() == 300
    journal.close()


def test_batches_are_bounded_by_bytes_but_never_empty(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "acc.sqlite", max_backlog=100)
    s = [journal.append(RawEvent("HistorySync", bytes(1000))) for _ in range(3)]
    assert seqs(journal.read_after(0, 10, max_bytes=1500)) == [s[0]]
    assert seqs(journal.read_after(0, 10, max_bytes=2000)) == s[:2]
    assert seqs(journal.read_after(0, 10, max_bytes=10)) == [s[0]]  # one, however large
    assert seqs(journal.read_after(s[0], 1)) == [s[1]]
    journal.close()


def test_backpressure_blocks_a_foreign_appender_until_entries_are_done(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "acc.sqlite", max_backlog=2)
    first = journal.append(ev(0))
    journal.append(ev(1))
    returned = threading.Event()
    result: list[int] = []

    def phone() -> None:
        result.append(journal.append(ev(2)))
        returned.set()

    thread = threading.Thread(target=phone, daemon=True)
    thread.start()
    try:
        assert journal.wait_blocked(1, timeout=WAIT), "the appender was not held at the bound"
        assert not returned.is_set()
        assert journal.backlog() == 2
        journal.mark_done([first])
        assert returned.wait(WAIT), "the appender did not resume once space was freed"
        assert journal.backlog() == 2
        assert journal.blocked_appenders() == 0
        assert seqs(everything(journal))[-1] == result[0]
    finally:
        journal.close()
        thread.join(WAIT)


def test_close_unblocks_a_blocked_appender_with_journal_closed(tmp_path: Path) -> None:
    path = tmp_path / "acc.sqlite"
    journal = Journal(path, max_backlog=1)
    journal.append(ev(0))
    raised: list[BaseException] = []

    def phone() -> None:
        try:
            journal.append(ev(1))
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=phone, daemon=True)
    thread.start()
    assert journal.wait_blocked(1, timeout=WAIT)
    journal.close()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], JournalClosed)
    with pytest.raises(JournalClosed):
        journal.append(ev(2))
    journal.close()  # idempotent

    reopened = Journal(path, max_backlog=1)
    assert [e.raw for e in everything(reopened)] == [ev(0)]  # undone entries stay for next start
    reopened.close()


def test_unreadable_file_raises_naming_it_and_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "acc.sqlite"
    garbage = b"this is not a sqlite database " * 200
    path.write_bytes(garbage)
    with pytest.raises(JournalCorrupt, match=str(path)):
        Journal(path, max_backlog=10)
    assert path.read_bytes() == garbage


def test_malformed_table_page_raises_journal_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "acc.sqlite"
    journal = Journal(path, max_backlog=100)
    for i in range(50):
        journal.append(ev(i))
    journal.close()  # the last connection checkpoints the WAL into the main file
    raw = bytearray(path.read_bytes())
    page = 4096
    assert len(raw) >= 3 * page
    raw[page : 2 * page] = b"\xff" * page  # page 2: the entries table's root
    path.write_bytes(bytes(raw))
    with pytest.raises(JournalCorrupt, match=str(path)):
        Journal(path, max_backlog=100)


CRASH_SCRIPT = """
import sys
from pathlib import Path
from wadaemon.journal import Journal
from wadaemon.whatsapp.transport import RawEvent

journal = Journal(Path(sys.argv[1]), max_backlog=10**9, synchronous=sys.argv[2])
i = 0
while True:
    seq = journal.append(RawEvent("Message", b"payload-%d" % i))
    print(seq, i, flush=True)  # reported only after append returned
    i += 1
"""


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_sigkill_after_append_returned_loses_nothing(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "acc.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(path), synchronous],
        stdout=subprocess.PIPE, cwd=REPO, env=env,
    )
    assert proc.stdout is not None
    reported: dict[int, bytes] = {}

    def note(line: bytes) -> None:
        if line.endswith(b"\n"):  # a line cut by the kill was never fully reported
            seq, i = line.split()
            reported[int(seq)] = b"payload-%d" % int(i)

    try:
        for line in proc.stdout:
            note(line)
            if len(reported) == 300:
                os.kill(proc.pid, signal.SIGKILL)  # mid-flight: it keeps appending until killed
                break
        for line in proc.stdout:  # whatever it reported before dying counts too
            note(line)
    finally:
        proc.kill()
        proc.wait(WAIT)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(reported) >= 300

    journal = Journal(path, max_backlog=10**9)
    stored = {e.seq: e.raw.data for e in everything(journal)}
    journal.close()
    missing = sorted(set(reported) - set(stored))
    assert not missing, f"reported as appended but lost: {missing[:10]}"
    assert all(stored[seq] == data for seq, data in reported.items())


# -- the trio reader --------------------------------------------------------------------------


async def test_reader_wakes_on_a_foreign_append_without_polling(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Trio's clock is frozen (MockClock, rate 0): a reader that polled with sleeps would never
    look again, so only a real wake-up from the appending thread can make this pass."""
    journal = Journal(tmp_path / "acc.sqlite", max_backlog=10)
    reader = JournalReader(journal)
    got: list[Entry] = []
    returned = threading.Event()

    async def consume() -> None:
        got.extend(await reader.next_batch(10))
        returned.set()

    phone = threading.Thread(target=journal.append, args=(ev(7),), daemon=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        assert not returned.is_set()
        phone.start()
        assert await trio.to_thread.run_sync(returned.wait, WAIT), "reader never woke up"
    phone.join(WAIT)
    assert [e.raw for e in got] == [ev(7)]
    journal.close()


async def test_handed_out_entries_are_not_handed_out_twice(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path / "acc.sqlite", max_backlog=100)
    reader = JournalReader(journal)
    s = [journal.append(ev(i)) for i in range(3)]
    assert seqs(await reader.next_batch(2)) == s[:2]
    assert seqs(await reader.next_batch(10)) == s[2:]
    with trio.move_on_after(60) as scope:  # virtual time: returns at once when all are blocked
        await reader.next_batch(10)
    assert scope.cancelled_caught, "entries already handed out were handed out again"

    await reader.mark_done([s[1]])
    reader.rewind()  # a restarted pipeline: everything not done comes back, in order
    assert seqs(await reader.next_batch(10)) == [s[0], s[2]]
    journal.close()


async def test_reader_replays_undone_entries_of_a_previous_run(tmp_path: Path) -> None:
    path = tmp_path / "acc.sqlite"
    journal = Journal(path, max_backlog=100)
    s = [journal.append(ev(i)) for i in range(4)]
    journal.mark_done([s[2]])
    journal.close()

    reopened = Journal(path, max_backlog=100)
    reader = JournalReader(reopened)
    batch = await reader.next_batch(10)
    assert seqs(batch) == [s[0], s[1], s[3]]
    assert [e.raw for e in batch] == [ev(0), ev(1), ev(3)]
    reopened.close()


async def test_reader_waits_when_everything_after_its_cursor_is_done(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path / "acc.sqlite", max_backlog=100)
    reader = JournalReader(journal)
    s = [journal.append(ev(i)) for i in range(3)]
    await reader.mark_done(s)
    reader.rewind()
    with trio.move_on_after(60) as scope:
        assert await reader.next_batch(10) == []  # must not be reached: no empty batches
    assert scope.cancelled_caught
    new = journal.append(ev(3))
    assert seqs(await reader.next_batch(10)) == [new]
    journal.close()


async def test_close_wakes_a_waiting_reader_with_journal_closed(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "acc.sqlite", max_backlog=10)
    reader = JournalReader(journal)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                with pytest.raises(JournalClosed):
                    await reader.next_batch(10)

            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            journal.close()
    with pytest.raises(JournalClosed):
        await reader.mark_done([1])


async def test_bounded_pipeline_delivers_everything_in_order(tmp_path: Path) -> None:
    """A phone thread pushes far more than the bound; a trio consumer settles out of order.
    Nothing is dropped, order is kept, and the backlog never exceeds the bound."""
    total, bound = 300, 8
    journal = Journal(tmp_path / "acc.sqlite", max_backlog=bound, synchronous="NORMAL")
    reader = JournalReader(journal)
    phone = threading.Thread(
        target=lambda: [journal.append(ev(i)) for i in range(total)], daemon=True
    )
    phone.start()
    received: list[RawEvent] = []
    try:
        with trio.fail_after(WAIT * 3):
            while len(received) < total:
                batch = await reader.next_batch(5)
                assert journal.backlog() <= bound
                received.extend(e.raw for e in batch)
                await reader.mark_done(reversed(seqs(batch)))
    finally:
        journal.close()  # releases the phone thread should the loop fail
    phone.join(WAIT)
    assert received == [ev(i) for i in range(total)]
    assert journal.backlog() == 0


# -- a model check ------------------------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.just(("append", 0)),
        st.tuples(st.just("done"), st.integers(min_value=0, max_value=20)),
        st.just(("reopen", 0)),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(OPS)
def test_journal_matches_a_queue_model(ops: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "acc.sqlite"
        journal = Journal(path, max_backlog=1000, synchronous="NORMAL")
        model: dict[int, RawEvent] = {}
        counter = 0
        try:
            for op, arg in ops:
                if op == "append":
                    raw = ev(counter)
                    counter += 1
                    seq = journal.append(raw)
                    assert seq not in model and all(seq > s for s in model)
                    model[seq] = raw
                elif op == "done" and model:
                    victim = sorted(model)[arg % len(model)]
                    assert journal.mark_done([victim]) == 1
                    del model[victim]
                elif op == "reopen":
                    journal.close()
                    journal = Journal(path, max_backlog=1000, synchronous="NORMAL")
                assert journal.backlog() == len(model)
                assert {e.seq: e.raw for e in everything(journal)} == model
            assert seqs(everything(journal)) == sorted(model)
        finally:
            journal.close()
