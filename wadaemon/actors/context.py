"""Everything one account's actors share, built once per account subtree.

The journal, identity map and status writer outlive pipeline restarts (they are created by the
account subtree, not by the actors), while the channels are recreated on each pipeline start so
that a crashed pipeline does not leave half-consumed items behind: the journal replays them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from wadaemon.actors.ondemand import OnDemandRequests
from wadaemon.actors.status_writer import AccountStatusWriter
from wadaemon.actors.work import (
    Committed,
    EntryLedger,
    GroupWork,
    HistoryItem,
    RealtimeItem,
    UpdateItem,
)
from wadaemon.config import Settings
from wadaemon.domain import GroupInfo
from wadaemon.identity import IdentityResolver
from wadaemon.journal import JournalReader
from wadaemon.names import NameBook
from wadaemon.status import AccountStatus
from wadaemon.store.runner import StoreRunner

log = logging.getLogger("wadaemon.account")

CHANNEL_DEPTH = 1000


@dataclass
class AccountContext:
    account_id: str
    settings: Settings
    runner: StoreRunner
    reader: JournalReader
    #: The history-sync cursor over the same journal (``actors.dispatcher``).
    history_reader: JournalReader
    identity: IdentityResolver
    status: AccountStatus
    status_writer: AccountStatusWriter
    ledger: EntryLedger
    #: ``Transport.group_info`` (blocking: called from a worker thread).
    group_info: Callable[[str], GroupInfo]
    #: Told of every connection change (state, journal receive time ms), in journal order.
    on_connection: Callable[[str, int], None] | None = None
    names: NameBook = field(default_factory=NameBook)
    #: True while the update applier holds items it took from its channel (see ``quiet``).
    updates_busy: bool = False
    #: ``Committed`` notices sent but not yet processed. They are the one kind of work tied to
    #: no journal entry, and a notice handed straight to a waiting receiver shows in no channel
    #: statistics, so they are counted here.
    committed_in_flight: int = 0
    #: A new pairing was seen: the dispatcher resets the history totals (``actors.history``).
    pairing_reset: bool = False
    #: Start times (epoch ms) of the store calls in flight, by call (``actors.retry``).
    store_waits: dict[object, int] = field(default_factory=dict)
    #: Set by the live dispatcher once known threads are loaded (per pipeline generation).
    identity_ready: trio.Event = field(init=False)
    #: Outstanding on-demand history requests (backfill, recent-sync) on this phone.
    requests: OnDemandRequests = field(init=False)
    history_send: trio.MemorySendChannel[HistoryItem] = field(init=False)
    history_recv: trio.MemoryReceiveChannel[HistoryItem] = field(init=False)
    realtime_send: trio.MemorySendChannel[RealtimeItem] = field(init=False)
    realtime_recv: trio.MemoryReceiveChannel[RealtimeItem] = field(init=False)
    updates_send: trio.MemorySendChannel[UpdateItem] = field(init=False)
    updates_recv: trio.MemoryReceiveChannel[UpdateItem] = field(init=False)
    groups_send: trio.MemorySendChannel[GroupWork] = field(init=False)
    groups_recv: trio.MemoryReceiveChannel[GroupWork] = field(init=False)

    def __post_init__(self) -> None:
        self.requests = OnDemandRequests(pace_ms=self.settings.history_request_pace_ms, status=self.status)
        self.open_channels()

    def quiet(self) -> bool:
        """No work in flight between actors: every channel empty and the update applier idle.
        Together with the journal's backlog this tells that the account is fully drained."""
        return not self.updates_busy and self.committed_in_flight == 0 and all(
            channel.statistics().current_buffer_used == 0
            for channel in (self.history_recv, self.realtime_recv, self.updates_recv, self.groups_recv)
        )

    async def announce_committed(self, keys: set[tuple[str, str]]) -> None:
        """Tell the update applier these messages are stored: updates waiting for them apply."""
        self.committed_in_flight += 1
        await self.updates_send.send(Committed(keys))

    async def set_aside(self, seq: int, error: str) -> None:
        """The store refused entry ``seq``'s content for good: move it to the journal's dead
        letters (``wadaemon.journal``), so everything behind it flows on."""
        if await self.reader.set_aside(seq, error):
            self.status.dead_letters += 1
            log.error("[dead-letter] accountId=%s seq=%d set aside (replay with `wadaemon deadletter "
                      "replay %s` once fixed): %s", self.account_id, seq, self.account_id, error)
        self.status.last_dead_letter = error
        self.ledger.forget(seq)
        self.ledger.notify()

    def open_channels(self) -> None:
        """Fresh channels for a (re)started pipeline. History chunks are large: depth 2 keeps
        memory bounded by about one chunk being written plus one being resolved."""
        self.history_send, self.history_recv = trio.open_memory_channel[HistoryItem](2)
        self.realtime_send, self.realtime_recv = trio.open_memory_channel[RealtimeItem](CHANNEL_DEPTH)
        self.updates_send, self.updates_recv = trio.open_memory_channel[UpdateItem](CHANNEL_DEPTH)
        self.groups_send, self.groups_recv = trio.open_memory_channel[GroupWork](CHANNEL_DEPTH)
        self.committed_in_flight = 0
        self.identity_ready = trio.Event()
        self.names.forget_asks()
