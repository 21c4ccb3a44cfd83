"""Work items the account's actors pass each other, and the ledger that settles journal entries.

The dispatcher turns each journal entry into resolved work (canonical JIDs, documents) and
sends it to the actor that writes it. An entry is marked done in the journal only once every
piece of work made from it is committed: ``EntryLedger`` counts the pieces.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

import msgspec

from wadaemon.domain import LidMapping, MessageDoc, MessageMutation, ReceiptUpdate


class HistoryWork(msgspec.Struct):
    seq: int
    sync_type: str
    chunk_order: int
    progress: int
    docs: list[MessageDoc]
    names: dict[str, str]
    groups: set[str]
    skipped: int
    #: Names learned for threads written earlier (a PUSH_NAME chunk): applied, never creating.
    renames: dict[str, str] = msgspec.field(default_factory=dict)


class GroupWork(msgspec.Struct):
    """A group whose subject is to be written: ``subject`` given (a group-change event), or
    asked from WhatsApp when "" (a group first seen through a live message)."""

    seq: int
    jid: str
    subject: str = ""


class AnswerWork(msgspec.Struct, kw_only=True):
    """An on-demand history answer (ON_DEMAND), resolved: documents of the threads it answers
    for (``threads``, canonical ids, also those it brought nothing for) and the threads whose
    conversation said the phone holds nothing older (``ended``)."""

    seq: int
    docs: list[MessageDoc]
    threads: list[str]
    ended: set[str]
    names: dict[str, str]
    groups: set[str]


class MessageWork(msgspec.Struct):
    seq: int
    doc: MessageDoc


class MergeWork(msgspec.Struct):
    """A LID thread whose phone number became known: merge it into the phone-number thread."""

    seq: int
    mapping: LidMapping


class UpdateWork(msgspec.Struct):
    """Receipts or mutations (edit, revoke, reaction) targeting stored messages."""

    seq: int
    receipts: list[ReceiptUpdate] = msgspec.field(default_factory=list)
    mutations: list[MessageMutation] = msgspec.field(default_factory=list)
    received_ms: int = 0


class Committed(msgspec.Struct):
    """Message keys (threadId, messageId) just committed: pending updates may now apply."""

    keys: set[tuple[str, str]]


HistoryItem = HistoryWork | AnswerWork
RealtimeItem = MessageWork | MergeWork
UpdateItem = UpdateWork | Committed


class EntryLedger:
    """Counts outstanding pieces of work per journal entry; marks entries done when none remain.

    Owned by the trio thread of one account; ``settle`` awaits the journal's ``mark_done``.
    """

    def __init__(
        self,
        mark_done: Callable[[Sequence[int]], Awaitable[None]],
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self._mark_done = mark_done
        self._on_progress = on_progress
        self._outstanding: dict[int, int] = {}

    def notify(self) -> None:
        """Tell watchers (``AccountRuntime.wait_drained``) that the account made progress."""
        if self._on_progress is not None:
            self._on_progress()

    def expect(self, seq: int, pieces: int) -> None:
        if pieces > 0:
            self._outstanding[seq] = self._outstanding.get(seq, 0) + pieces

    def outstanding(self) -> int:
        return len(self._outstanding)

    def forget(self, seq: int) -> None:
        """Stop counting ``seq``'s pieces (it was set aside); later settles of it are harmless."""
        self._outstanding.pop(seq, None)

    def reset(self) -> None:
        """Forget in-flight work (the pipeline restarts and the journal replays it)."""
        self._outstanding.clear()

    async def settle(self, seqs: Iterable[int]) -> None:
        finished: list[int] = []
        for seq in seqs:
            left = self._outstanding.get(seq)
            if left is None:
                finished.append(seq)
            elif left <= 1:
                del self._outstanding[seq]
                finished.append(seq)
            else:
                self._outstanding[seq] = left - 1
        if finished:
            await self._mark_done(finished)
            self.notify()
