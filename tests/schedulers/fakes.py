"""The accounts a scheduler sees (``schedulers.view``), without a daemon behind them.

The store is real (SQLite); only the account side is stand-in: a phone that records the
requests it receives and answers them only when the test says so."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from wadaemon.actors.ondemand import OnDemandAnswer, OnDemandRequests
from wadaemon.config import Settings
from wadaemon.domain import MessageDoc, SyncGap
from wadaemon.schedulers.auto_backfill import AutoBackfill
from wadaemon.status import AccountStatus, DaemonStatus
from wadaemon.store.runner import StoreRunner
from wadaemon.store.sqlite import SqliteStore

T = TypeVar("T")

#: Epoch ms at trio time 0 (2025-01-01).
BASE_MS = 1_735_689_600_000


def wall_ms() -> int:
    return BASE_MS + int(trio.current_time() * 1000)


class FakeAccount:
    def __init__(self, account_id: str, *, connected: bool = True, available: bool = True) -> None:
        self.account_id = account_id
        self.attach(DaemonStatus("me"))
        self._connected = connected
        self.connects = 1 if connected else 0
        self.available = available
        self.asked: list[tuple[str, str, int]] = []
        self.asked_event = trio.Event()
        self.gaps: list[SyncGap] = []

    def attach(self, board: DaemonStatus) -> None:
        """Count on ``board`` (the scheduler's): /metrics then shows this account."""
        self.status: AccountStatus = board.account(self.account_id)
        self.requests = OnDemandRequests(pace_ms=0, status=self.status)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def history_requests_available(self) -> bool:
        return self.available

    def open_gaps(self) -> list[SyncGap]:
        return list(self.gaps)

    def close_gaps(self, gaps: Sequence[SyncGap]) -> None:
        self.gaps = [g for g in self.gaps if g not in gaps]

    async def request_history(self, chat_jid: str, anchor: MessageDoc, count: int) -> None:
        self.asked.append((chat_jid, anchor.id, count))
        self.asked_event.set()
        self.asked_event = trio.Event()

    def answer(self, thread_id: str, *, oldest: MessageDoc | None, written: int, end: bool = False) -> bool:
        return self.requests.deliver(OnDemandAnswer(thread_id=thread_id, received=written, written=written,
                                                    oldest=oldest, end_of_history=end))


class FakeAccounts:
    def __init__(self, accounts: Sequence[FakeAccount]) -> None:
        self.accounts = list(accounts)
        self.board = DaemonStatus("me")
        for account in self.accounts:
            account.attach(self.board)
        self._changed = trio.Event()

    def running_accounts(self) -> list[FakeAccount]:
        return self.accounts

    def changed(self) -> trio.Event:
        return self._changed

    def connect(self, account: FakeAccount) -> None:
        account._connected = True
        account.connects += 1
        self._changed.set()
        self._changed = trio.Event()


class CountingStore(SqliteStore):
    """SQLite, counting calls per operation (bench and the "reads nothing" tests)."""

    READS = ("get_account", "read_lease", "list_threads", "oldest_message", "newest_message", "get_thread",
             "first_message_since", "list_messages", "threads_missing_last_message")
    WRITES = ("update_account", "acquire_lease", "renew_lease", "release_lease", "patch_threads",
              "upsert_messages", "advance_threads")

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: dict[str, int] = {}
        for name in (*self.READS, *self.WRITES):
            self._count(name)

    def _count(self, name: str) -> None:
        inner = getattr(self, name)

        def counted(*args: object, **kwargs: object) -> object:
            self.calls[name] = self.calls.get(name, 0) + 1
            return inner(*args, **kwargs)

        setattr(self, name, counted)

    def reads(self) -> int:
        return sum(self.calls.get(n, 0) for n in self.READS)

    def writes(self) -> int:
        return sum(self.calls.get(n, 0) for n in self.WRITES)


class InlineRunner(StoreRunner):
    """Store calls on the trio thread itself: under an autojumping MockClock, time must not
    jump while a call is in flight in a worker thread (SQLite calls here take microseconds)."""

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        await trio.lowlevel.checkpoint()
        return fn(*args, **kwargs)

    atomic = read

    async def write(self, account_id: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self.lane(account_id):
            return await self.read(fn, *args, **kwargs)


def scheduler(store: SqliteStore, accounts: FakeAccounts, *, seed: int = 0, **settings: object) -> AutoBackfill:
    values: dict[str, object] = {"instance_id": "me", "history_request_pace_ms": 0, **settings}
    return AutoBackfill(Settings(**values), InlineRunner(store), accounts,  # type: ignore[arg-type]
                        board=accounts.board, clock=wall_ms, rng=random.Random(seed))
