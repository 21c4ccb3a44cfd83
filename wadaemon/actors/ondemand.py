"""On-demand history: the requests outstanding on one phone, and the step that writes answers.

A backfill or recent-sync run asks the phone for messages older than an anchor
(``Transport.request_history``); the answer comes back *later* as a HistorySync of type
ON_DEMAND, through the journal like every other event, so it is durable before anything reads
it. The dispatcher hands such answers to their own step (``actors.history.ingest_answer``) rather than to the
pairing-history ingester, the way mautrix-whatsapp gives the on-demand answer a handler of its
own: an answer must be labelled with the purpose of the request it answers (``backfill`` or
``recent_sync``), and the run waiting for it must learn what it brought.

Why one request at a time per phone (``OnDemandRequests.ask`` holds a lock) and a pause
between requests: the phone is a user's handset, answering from its own database over a
battery-powered radio. Flooding it gains nothing (answers come back one by one anyway) and
matching an answer to *the* outstanding request of its chat stays unambiguous.

Matching is by canonical thread: the dispatcher resolves the answer's chat through the
identity resolver, so an answer addressed by LID finds the request made for the phone-number
thread. An answer that arrives after its request timed out is still written (it went through
the journal; throwing it away would lose messages), labelled with the purpose of the request
it most likely answers.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec
import trio

from wadaemon.domain import MessageDoc, SyncSource
from wadaemon.status import AccountStatus

Purpose = Literal["backfill", "recent_sync"]

#: Timed-out requests remembered (per thread) to label their late answers.
LATE_MEMORY = 256


class OnDemandAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """What one answer brought for one thread."""

    thread_id: str
    received: int
    #: Newly stored (dry run: what would have been written, i.e. ``received``).
    written: int
    #: The oldest message of the answer: the anchor of the next, older request.
    oldest: MessageDoc | None
    end_of_history: bool


class _Request:
    def __init__(self, thread_id: str, purpose: Purpose) -> None:
        self.thread_id = thread_id
        self.purpose = purpose
        self.answer: OnDemandAnswer | None = None
        self.done = trio.Event()


class OnDemandRequests:
    """The requests outstanding on one phone. Owned by the trio thread."""

    def __init__(self, *, pace_ms: int, status: AccountStatus) -> None:
        """Requests sent, answered (in time or late) and timed out are counted on ``status``
        (the account's status board: /diag and /metrics read them there)."""
        self._pace_s = pace_ms / 1000
        self._status = status
        self._lock = trio.Lock()
        self._outstanding: dict[str, _Request] = {}
        self._timed_out: dict[str, Purpose] = {}
        self._next_at = -math.inf

    def outstanding(self) -> list[str]:
        """Thread ids with a request in flight (for /diag)."""
        return sorted(self._outstanding)

    def _show(self) -> None:
        self._status.outstanding_requests = self.outstanding()

    def source_for(self, thread_id: str) -> SyncSource:
        request = self._outstanding.get(thread_id)
        if request is not None:
            return request.purpose
        return self._timed_out.get(thread_id, "backfill")

    def deliver(self, answer: OnDemandAnswer) -> bool:
        """An answer was written; wake the run waiting for it. False: nobody was (late)."""
        request = self._outstanding.get(answer.thread_id)
        if request is None or request.done.is_set():
            self._status.history_requests_answered_late += 1
            return False
        self._status.history_requests_answered += 1
        request.answer = answer
        request.done.set()
        return True

    async def ask(self, thread_id: str, purpose: Purpose, send: Callable[[], Awaitable[None]],
                  *, timeout_s: float) -> OnDemandAnswer | None:
        """Send one request (after the phone's pause) and wait for its answer; None on
        timeout. ``send``'s exceptions (capability unavailable, transport errors) propagate."""
        async with self._lock:
            await trio.sleep_until(self._next_at)
            request = self._outstanding[thread_id] = _Request(thread_id, purpose)
            self._show()
            try:
                await send()
                self._status.history_requests_sent += 1
                self._next_at = trio.current_time() + self._pace_s
                with trio.move_on_after(timeout_s):
                    await request.done.wait()
            finally:
                del self._outstanding[thread_id]
                self._show()
            if request.answer is None:
                self._status.history_requests_timed_out += 1
                self._timed_out[thread_id] = purpose
                while len(self._timed_out) > LATE_MEMORY:
                    del self._timed_out[next(iter(self._timed_out))]
            return request.answer
