"""A poison event (content the store refuses for good) is set aside as a dead letter; the rest
of the account flows on, and the dead letter replays once the cause is fixed. Both stores."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import trio

from tests.spine.harness import dump, running, settings_for, settle
from wadaemon.cli import drain
from wadaemon.journal import Journal
from wadaemon.status import health_problems
from wadaemon.store.contract import Store, StoreError
from wadaemon.whatsapp.replay import ReplayTransport
from wadaemon.whatsapp.simphone import SimPhone

ACCOUNT = "acct"
POISON = "poison pill"


class PoisonStore:
    """Refuses, as Firestore refuses an id past its limit (``InvalidArgument`` -> StoreError),
    every write carrying a message whose body is ``POISON`` — while ``armed``."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.armed = True
        self.refusals = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != "upsert_messages":
            return attr

        def upsert(docs: Any) -> Any:
            if self.armed and any(doc.body == POISON for doc in docs):
                with self._lock:
                    self.refusals += 1
                raise StoreError("firestore upsert_messages: InvalidArgument: injected")
            return attr(docs)

        return upsert


def messages(store: Store) -> dict[str, str]:
    return {m.id: m.body for _, (_, ms) in dump(store, ACCOUNT).items() for m in ms}


async def test_poison_message_is_set_aside_and_the_rest_flows(store: Store, tmp_path: Path) -> None:
    poisoned = PoisonStore(store)
    settings = settings_for(tmp_path / "data")
    phone = SimPhone(ACCOUNT, seed=3, chats=6, history_messages=200, chunk_size=50)
    async with running(settings, poisoned, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        before = [phone.emit_inbound(n % 6, f"before {n}") for n in range(5)]
        bad = phone.emit_inbound(0, POISON)
        after = [phone.emit_inbound(n % 6, f"after {n}") for n in range(5)]
        await settle(daemon, [phone])
        status = daemon.board.account(ACCOUNT)
        assert status.dead_letters == 1 and "InvalidArgument" in status.last_dead_letter
        assert status.pipeline_restarts == 0
        stored = messages(store)
        assert all(mid in stored for mid in before + after)
        assert bad not in stored and len(stored) == 200 + 10
    assert poisoned.refusals >= 1

    journal = Journal(tmp_path / "data" / "journal" / f"{ACCOUNT}.sqlite", max_backlog=1000)
    letters = journal.dead_letters()
    journal.close()
    assert [letter.raw.name for letter in letters] == ["Message"]
    assert "InvalidArgument" in letters[0].error

    poisoned.armed = False  # the cause is fixed: the dead letter lands on replay
    journal = Journal(settings.data_dir / "journal" / f"{ACCOUNT}.sqlite", max_backlog=1000)
    assert journal.restore_dead_letters() == 1
    journal.close()
    replayed, _ = await drain(settings, poisoned, ACCOUNT, ReplayTransport(ACCOUNT, None))
    assert replayed is not None and replayed.dead_letters == 0
    assert messages(store)[bad] == POISON


async def test_a_store_wide_error_is_not_turned_into_dead_letters(tmp_path: Path, sqlite_store: Store) -> None:
    """When every item of a batch is refused, the store is broken, not the content: nothing is
    set aside, the pipeline restarts (and shows it), and everything lands once it recovers."""

    class Broken:
        def __init__(self) -> None:
            self.broken = True
            self.calls = 0
            self.many_calls = threading.Event()  # > 3 pipeline generations' worth of refusals

        def __getattr__(self, name: str) -> Any:
            attr = getattr(sqlite_store, name)
            if name != "upsert_messages":
                return attr

            def upsert(docs: Any) -> Any:
                self.calls += 1
                if self.calls >= 200:
                    self.many_calls.set()
                if self.broken and len(docs) > 0:
                    raise StoreError("sqlite upsert_messages: DatabaseError: injected")
                return attr(docs)

            return upsert

    broken = Broken()
    phone = SimPhone(ACCOUNT, seed=5, chats=4, history_messages=60, chunk_size=30)
    async with running(settings_for(tmp_path / "data"), broken, {ACCOUNT: phone}) as daemon:
        status = daemon.board.account(ACCOUNT)
        assert await trio.to_thread.run_sync(broken.many_calls.wait, 60.0)
        assert status.pipeline_restarts >= 2
        assert status.dead_letters == 0
        assert "injected" in status.last_error
        problems = health_problems([status], status.pipeline_restarted_at_ms or 0)
        assert problems and "pipeline restarting" in problems[0]
    phone = SimPhone(ACCOUNT, seed=5, chats=4, history_messages=60, chunk_size=30, paired=True)
    async with running(settings_for(tmp_path / "data"), sqlite_store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
    assert len(messages(sqlite_store)) == 60
