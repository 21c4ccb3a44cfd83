"""The journal under damage: appends refused by a full disk are held, never dropped (injected
SQLite error, and a real 2 MB tmpfs when we may mount one); dead letters move and come back."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from wadaemon.journal import HeldAppends, Journal, JournalClosed
from wadaemon.whatsapp.transport import RawEvent

WAIT = 10.0


def ev(i: int, size: int = 10) -> RawEvent:
    return RawEvent("Message", f"event-{i}-".encode() + b"x" * size)


class FullDisk(Journal):
    """A journal whose appends fail as SQLite fails on a full disk while ``full`` is set."""

    full = threading.Event()
    refused = 0

    def append(self, raw: RawEvent) -> int:
        if self.full.is_set():
            self.refused += 1
            raise sqlite3.OperationalError("database or disk is full")
        return super().append(raw)


def test_refused_appends_are_held_in_order_and_land_when_the_disk_frees(tmp_path: Path) -> None:
    journal = FullDisk(tmp_path / "j.sqlite", max_backlog=1000)
    journal.full = threading.Event()
    seen: list[tuple[int, str]] = []
    held = HeldAppends(journal, first_delay_s=0.001, max_delay_s=0.01, on_change=lambda n, e: seen.append((n, e)))
    held.append(ev(0))
    journal.full.set()
    for i in range(1, 6):
        held.append(ev(i))  # never raises, never drops
    assert held.held() == 5 and "disk is full" in held.last_error
    assert journal.backlog() == 1
    journal.full.clear()
    assert held.wait_held(0, WAIT)
    with held._cond:  # until the flusher reports the last one journaled
        assert held._cond.wait_for(lambda: held.held() == 0 and not held.last_error, WAIT)
    assert [e.raw for e in journal.read_after(0, 100)] == [ev(i) for i in range(6)]
    assert seen[-1] == (0, "")
    held.close()
    journal.close()


def test_at_the_limit_the_hand_over_blocks_instead_of_dropping(tmp_path: Path) -> None:
    journal = FullDisk(tmp_path / "j.sqlite", max_backlog=1000)
    journal.full = threading.Event()
    journal.full.set()
    held = HeldAppends(journal, limit=3, first_delay_s=0.001, max_delay_s=0.01)
    for i in range(3):
        held.append(ev(i))
    done = threading.Event()

    def fourth() -> None:
        held.append(ev(3))
        done.set()

    thread = threading.Thread(target=fourth)
    thread.start()
    assert not done.wait(0.2)  # held at the limit: the caller waits (backpressure)
    journal.full.clear()
    assert done.wait(WAIT)
    thread.join(WAIT)
    with held._cond:
        assert held._cond.wait_for(lambda: held.held() == 0, WAIT)
    assert [e.raw for e in journal.read_after(0, 100)] == [ev(i) for i in range(4)]
    held.close()
    with pytest.raises(JournalClosed):
        held.append(ev(9))
    journal.close()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(path: Path) -> None:
    with contextlib.suppress(OSError), path.open("wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
            os.fsync(out.fileno())


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_really_full_disk_holds_events_and_journals_them_once_freed(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "2m") as disk:
        journal = Journal(disk / "j.sqlite", max_backlog=100_000)
        held = HeldAppends(journal, first_delay_s=0.005, max_delay_s=0.05)
        try:
            held.append(ev(0, 1000))
            fill(disk / "filler")
            for i in range(1, 60):
                held.append(ev(i, 1000))  # a real SQLITE_FULL: held, not raised
            assert held.held() > 0 and "full" in held.last_error
            (disk / "filler").unlink()
            with held._cond:
                assert held._cond.wait_for(lambda: held.held() == 0, WAIT * 3), held.last_error
            assert [e.raw for e in journal.read_after(0, 1000)] == [ev(i, 1000) for i in range(60)]
        finally:
            held.close()
            journal.close()


def test_dead_letters_move_out_of_the_queue_and_back(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", max_backlog=10)
    for i in range(3):
        journal.append(ev(i))
    assert journal.set_aside(2, "StoreError: refused") is True
    assert journal.set_aside(2, "again") is False
    assert journal.backlog() == 2
    assert [e.seq for e in journal.read_after(0, 10)] == [1, 3]
    journal.close()
    journal = Journal(tmp_path / "j.sqlite", max_backlog=10)  # durable across a reopen
    [letter] = journal.dead_letters()
    assert (letter.seq, letter.raw, letter.error) == (2, ev(1), "StoreError: refused")
    assert journal.restore_dead_letters() == 1
    assert journal.dead_letters() == [] and journal.backlog() == 3
    assert [e.raw for e in journal.read_after(3, 10)] == [ev(1)]
    journal.close()


def test_a_journal_truncated_to_zero_reports_what_it_lost(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, max_backlog=100)
    for i in range(5):
        journal.append(ev(i))
    journal.close()
    clean = Journal(path, max_backlog=100)
    assert clean.loss is None  # a clean reopen loses nothing
    clean.close()
    path.write_bytes(b"")
    reopened = Journal(path, max_backlog=100)
    assert reopened.loss is not None
    assert (reopened.loss.last_seq, reopened.loss.watermark_seq) == (0, 5)
    reopened.close()
    again = Journal(path, max_backlog=100)
    assert again.loss is None  # reported once, then reset
    again.close()


def test_a_journal_whose_wal_is_lost_reports_what_it_lost(tmp_path: Path) -> None:
    live, copy = tmp_path / "live", tmp_path / "copy"
    live.mkdir()
    copy.mkdir()
    journal = Journal(live / "a.sqlite", max_backlog=100)
    journal.append(ev(0))
    journal.mark_done([1])
    for i in range(1, 4):
        journal.append(ev(i))  # committed to the WAL, not yet checkpointed
    # What a host sees after the WAL is deleted: the main file and the watermark, no WAL.
    (copy / "a.sqlite").write_bytes((live / "a.sqlite").read_bytes())
    (copy / "a.seq").write_bytes((live / "a.seq").read_bytes())
    journal.close()
    damaged = Journal(copy / "a.sqlite", max_backlog=100)
    assert damaged.loss is not None and damaged.loss.watermark_seq == 4
    assert damaged.loss.last_seq < 4 and damaged.loss.since_ms > 0
    damaged.close()
