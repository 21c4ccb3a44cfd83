"""Damaged journals: an unreadable one is quarantined and every account still starts; a short
one (truncated, WAL lost) is noticed; both are reported and record a gap for the gap filler."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.spine.harness import dump, running, settings_for, settle
from wadaemon.journal import Journal
from wadaemon.status import health_problems
from wadaemon.store.contract import Store
from wadaemon.whatsapp.simphone import SimPhone
from wadaemon.whatsapp.transport import RawEvent

GARBAGE = b"this is not a database, it was overwritten " * 200


def phones() -> dict[str, SimPhone]:
    return {name: SimPhone(name, seed=n, chats=3, history_messages=40, chunk_size=20)
            for n, name in enumerate(["hurt", "fine"])}


def count(store: Store, account_id: str) -> int:
    return sum(len(ms) for _, (_, ms) in dump(store, account_id).items())


async def test_a_corrupt_journal_is_quarantined_and_every_account_starts(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journal_dir = tmp_path / "data" / "journal"
    journal_dir.mkdir(parents=True)
    (journal_dir / "hurt.sqlite").write_bytes(GARBAGE)
    caplog.set_level(logging.ERROR, "wadaemon.account")
    devices = phones()
    async with running(settings_for(tmp_path / "data"), store, devices) as daemon:  # type: ignore[arg-type]
        await settle(daemon, list(devices.values()))
        hurt = daemon.board.account("hurt")
        assert "quarantined" in hurt.journal_damage
        assert daemon.board.account("fine").journal_damage == ""
        assert any("hurt" in p for p in health_problems(daemon.board.snapshot().accounts, 0))
    assert count(store, "hurt") == 40 and count(store, "fine") == 40  # both ran, on a fresh journal
    [moved] = list(journal_dir.glob("hurt.sqlite.corrupt-*"))
    assert moved.read_bytes() == GARBAGE  # moved aside, never deleted
    assert any("DAMAGED" in r.message and "hurt" in r.message for r in caplog.records)
    doc = store.get_account("hurt")
    assert doc is not None and [g.reason for g in doc.sync_gaps or []] == ["journal-quarantined"]
    fine = store.get_account("fine")
    assert fine is not None and not any("journal" in g.reason for g in fine.sync_gaps or [])


async def test_a_truncated_journal_is_reported_with_its_gap(store: Store, tmp_path: Path) -> None:
    journal_dir = tmp_path / "data" / "journal"
    journal = Journal(journal_dir / "hurt.sqlite", max_backlog=100)
    for _ in range(7):  # undrained events that the truncation below destroys
        journal.append(RawEvent("Connected", b""))
    journal.close()
    (journal_dir / "hurt.sqlite").write_bytes(b"")
    devices = phones()
    async with running(settings_for(tmp_path / "data"), store, devices) as daemon:  # type: ignore[arg-type]
        await settle(daemon, list(devices.values()))
        assert "(7) are gone" in daemon.board.account("hurt").journal_damage
    doc = store.get_account("hurt")
    assert doc is not None
    [gap] = [g for g in doc.sync_gaps or [] if g.reason == "journal-short"]
    assert gap.from_ms < gap.to_ms
