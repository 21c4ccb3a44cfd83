"""Coverage: until when this account's events are known to have reached the journal, and the
gaps — spans when they may not have — that recent-sync must fill.

A gap opens whenever the account was not connected: the daemon down (a crash, a restart, a
deploy), the socket disconnected (whatsmeow reconnects by itself, but while it is away the
server queues messages, and its offline queue is not guaranteed to deliver all of them), or
the account moving to another instance (failover). Its span is ``[coveredUntil, connect]``:

* ``coveredUntil`` is a heartbeat on ``accounts/{id}`` (every ``HEARTBEAT_S`` while connected,
  through the coalesced status writer, routine) and the exact time of a disconnect event. It
  lives in the store, not on this machine, because the instance that restarts an account
  after a failover is not the one that ran it.
* The gap is recorded **durably**, in ``accounts/{id}.syncGaps``, the moment the connect is
  seen, together with the new ``coveredUntil`` in one patch (one document write: there is no
  moment where the heartbeat moved on but the gap was not written). The outage that matters
  most *is* a restart, so a gap kept in memory would be lost exactly when it is needed.

Why a heartbeat at 60 s: it bounds how far back a crash gap reaches before the crash (at most
one interval: a few extra threads checked), at one status write per minute per idle account
— 200 idle accounts cost ~3 writes/s, folded into writes that happen anyway when busy.

Other producers (a quarantined journal, #9) call ``record_gap``. Recent-sync reads
``open_gaps`` and drops gaps with ``close_gaps`` once they leave its look-back window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial

import trio

from wadaemon.actors.context import AccountContext
from wadaemon.actors.retry import retry_store
from wadaemon.domain import AccountDoc, SyncGap, datetime_to_ms, ms_to_datetime

log = logging.getLogger("wadaemon.coverage")

HEARTBEAT_S = 60.0
#: A gap starts this much before the heartbeat says: message timestamps are WhatsApp's clock,
#: the heartbeat is ours, and the two may disagree by seconds.
CLOCK_MARGIN_MS = 60_000


def add_gap(gaps: Sequence[SyncGap], gap: SyncGap) -> list[SyncGap]:
    """``gaps`` with ``gap`` added, overlapping or touching spans folded, oldest first."""
    spans = sorted([*gaps, gap], key=lambda g: (g.from_ms, g.to_ms))
    out: list[SyncGap] = []
    for span in spans:
        if out and span.from_ms <= out[-1].to_ms:
            last = out[-1]
            reasons = last.reason if span.reason in last.reason.split("+") else f"{last.reason}+{span.reason}"
            out[-1] = SyncGap(from_ms=last.from_ms, to_ms=max(last.to_ms, span.to_ms), reason=reasons)
        else:
            out.append(span)
    return out


class Coverage:
    """One account's coverage and gaps. Owned by the trio thread; ``on_connection`` is called
    by the dispatcher in journal order."""

    def __init__(self, clock: Callable[[], int], on_change: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self._on_change = on_change
        self._ctx: AccountContext | None = None
        self.covered_until_ms: int | None = None
        self.gaps: list[SyncGap] = []
        self.connected = False
        self.connects = 0
        self._loaded = False
        self._pending: list[tuple[str, int]] = []
        self._pending_gaps: list[SyncGap] = []
        self._changed = trio.Event()

    def on_connection(self, state: str, at_ms: int) -> None:
        if not self._loaded:
            self._pending.append((state, at_ms))
            return
        if state == "connected":
            self.connects += 1
            self.connected = True
            reason = "restart" if self.connects == 1 else "disconnected"
            if self.covered_until_ms is not None and at_ms > self.covered_until_ms:
                self._add(SyncGap(from_ms=self.covered_until_ms - CLOCK_MARGIN_MS, to_ms=at_ms, reason=reason))
            self._cover(max(at_ms, self.covered_until_ms or 0))
        elif self.connected:
            self.connected = False
            self._cover(max(at_ms, self.covered_until_ms or 0))
        self._changed.set()
        self._changed = trio.Event()
        if self._on_change is not None:
            self._on_change()

    def record_gap(self, from_ms: int, to_ms: int, reason: str) -> None:
        """A span whose events may be missing for another reason (e.g. a quarantined journal).
        Before the stored gaps are loaded it waits, so the load does not overwrite it."""
        if not self._loaded:
            self._pending_gaps.append(SyncGap(from_ms=from_ms, to_ms=to_ms, reason=reason))
            return
        if to_ms > from_ms:
            self._add(SyncGap(from_ms=from_ms, to_ms=to_ms, reason=reason))
            self._post(AccountDoc(sync_gaps=self.gaps))

    def close_gaps(self, gaps: Sequence[SyncGap]) -> None:
        done = set((g.from_ms, g.to_ms) for g in gaps)
        kept = [g for g in self.gaps if (g.from_ms, g.to_ms) not in done]
        if len(kept) != len(self.gaps):
            if self._ctx is not None:
                self._ctx.status.sync_gaps_closed += len(self.gaps) - len(kept)
            self.gaps = kept
            self._show()
            self._post(AccountDoc(sync_gaps=self.gaps))

    def _add(self, gap: SyncGap) -> None:
        self.gaps = add_gap(self.gaps, gap)
        if self._ctx is not None:
            self._ctx.status.sync_gaps_opened += 1
        self._show()
        log.info("[recent-sync] accountId=%s gap recorded fromMs=%d toMs=%d spanS=%d reason=%s",
                 self._ctx.account_id if self._ctx else "?", gap.from_ms, gap.to_ms,
                 (gap.to_ms - gap.from_ms) // 1000, gap.reason)

    def _cover(self, until_ms: int, *, routine: bool = False) -> None:
        self.covered_until_ms = until_ms
        self._post(AccountDoc(covered_until=ms_to_datetime(until_ms), sync_gaps=self.gaps), routine=routine)

    def _post(self, patch: AccountDoc, *, routine: bool = False) -> None:
        if self._ctx is not None:
            self._ctx.status_writer.post(patch, routine=routine)

    def _show(self) -> None:
        if self._ctx is not None:
            self._ctx.status.open_gaps = list(self.gaps)

    async def run(self, ctx: AccountContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load what the store knows (the last instance's heartbeat and open gaps), replay the
        connection changes seen meanwhile, then beat while connected."""
        self._ctx = ctx
        task_status.started()
        if not self._loaded:
            doc = await retry_store(ctx, "coverage", partial(ctx.runner.read, ctx.runner.store.get_account, ctx.account_id))
            if doc is not None:
                self.covered_until_ms = datetime_to_ms(doc.covered_until) if doc.covered_until else None
                self.gaps = list(doc.sync_gaps or [])
                self._show()
            self._loaded = True
            pending, self._pending = self._pending, []
            for state, at_ms in pending:
                self.on_connection(state, at_ms)
            for gap in self._pending_gaps:
                self.record_gap(gap.from_ms, gap.to_ms, gap.reason)
            self._pending_gaps = []
        while True:
            changed = self._changed
            if self.connected:
                with trio.move_on_after(HEARTBEAT_S):
                    await changed.wait()
                if self.connected and not changed.is_set():
                    self._cover(max(self._clock(), self.covered_until_ms or 0), routine=True)
            else:
                await changed.wait()
