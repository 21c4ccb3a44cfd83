"""Pure decision rules of the schedulers: which account runs, when, and why not.

No trio, no store, no clock of its own: every function takes the time it decides at, so the
rules are tested as plain functions and the actors around them stay thin (the model is
``supervisors/policy.py``).

Auto-backfill eligibility, in the order the original backend got wrong:

1. **Filter, then cap.** Accounts inside their success cooldown or their attempt backoff are
   dropped *before* the per-tick cap (``AUTO_BACKFILL_MAX_ACCOUNTS_PER_TICK``) is applied to
   the rest, oldest ``lastAutoBackfillAt`` first. Capping first let four failing accounts at
   the head of the order take every tick while the others starved.
2. **Concurrency is counted before a lock is taken**: runs in flight in this instance hold a
   slot from the moment they are picked, so a tick cannot start more than
   ``WHATSAPP_BACKFILL_CONCURRENCY`` runs while their lock requests are still on the wire.
3. **The backoff follows a failed attempt only** (docs/configuration.md: "min time between attempts (after
   failure)"); after a success the longer cooldown governs. A run interrupted by a crash
   counts as failed.
4. **A stale ``running: true`` blocks nothing.** Only the lock does: a dead process's lock
   expires, and the account is eligible again at the next tick.
5. **Connect triggers obey cooldown and backoff.** whatsmeow reconnects on every network blip;
   a blip must not cost the user's phone a backfill. What a blip may have lost is
   recent-sync's job (a gap), not backfill's. The first connect after start of an account
   that never succeeded runs (10-40 s later). Only the manual trigger bypasses cooldown and
   backoff — never the lock.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from typing import Literal

import msgspec

from wadaemon.config import Settings
from wadaemon.domain import SyncGap, ThreadDoc

#: Why an account does not run now ("" = eligible).
Blocked = Literal["", "disconnected", "running", "capability_unavailable", "lock_busy", "cooldown", "backoff"]

CONNECT_JITTER_MS = (10_000, 40_000)


class BackfillState(msgspec.Struct, kw_only=True):
    """What the scheduler knows of one account's auto-backfill: read from the account
    document once when the scheduler starts, then kept from what it writes itself (so a tick
    over accounts inside their cooldown reads nothing)."""

    account_id: str
    last_at_ms: int | None = None  # lastAutoBackfillAt: when the last run ended
    last_success_ms: int | None = None
    last_attempt_ms: int | None = None  # when the last run started
    last_failed: bool = False
    running_here: bool = False
    busy_until_ms: int | None = None  # the lock was seen held by another instance until then
    busy_holder: str = ""
    unavailable: bool = False  # the transport cannot request history


class BackfillPolicy(msgspec.Struct, frozen=True, kw_only=True):
    cooldown_ms: int
    backoff_ms: int
    max_per_tick: int
    max_concurrency: int

    @classmethod
    def of(cls, settings: Settings) -> BackfillPolicy:
        return cls(cooldown_ms=settings.auto_backfill_cooldown_ms,
                   backoff_ms=settings.auto_backfill_attempt_backoff_ms,
                   max_per_tick=settings.auto_backfill_max_accounts_per_tick,
                   max_concurrency=settings.backfill_max_concurrency)


def blocked(state: BackfillState, now_ms: int, policy: BackfillPolicy, *, connected: bool,
            manual: bool = False) -> tuple[Blocked, int | None]:
    """Why ``state``'s account may not start a run at ``now_ms``, and until when (None: until
    something else changes). ``manual`` bypasses cooldown and backoff, nothing else."""
    if not connected:
        return "disconnected", None
    if state.running_here:
        return "running", None
    if state.unavailable:
        return "capability_unavailable", None
    if state.busy_until_ms is not None and now_ms < state.busy_until_ms:
        return "lock_busy", state.busy_until_ms
    if manual:
        return "", None
    if state.last_success_ms is not None and now_ms < state.last_success_ms + policy.cooldown_ms:
        return "cooldown", state.last_success_ms + policy.cooldown_ms
    if state.last_failed and state.last_attempt_ms is not None and now_ms < state.last_attempt_ms + policy.backoff_ms:
        return "backoff", state.last_attempt_ms + policy.backoff_ms
    return "", None


def pick(states: Sequence[BackfillState], connected: Collection[str], now_ms: int,
         policy: BackfillPolicy, *, running: int) -> tuple[list[str], int]:
    """(accounts to start now, how many were eligible). Filter, sort oldest
    ``lastAutoBackfillAt`` first (never-run first, then by id for a stable order), cap per
    tick, then fill only the free concurrency slots."""
    eligible = [s for s in states if blocked(s, now_ms, policy, connected=s.account_id in connected)[0] == ""]
    eligible.sort(key=lambda s: (s.last_at_ms is not None, s.last_at_ms or 0, s.account_id))
    slots = max(0, policy.max_concurrency - running)
    return [s.account_id for s in eligible[: policy.max_per_tick][:slots]], len(eligible)


def connect_delay_ms(rng: random.Random) -> int:
    """The pause between a connect and its backfill (10-40 s): spreads a fleet's reconnect
    storm (every account reconnects at once after a network outage) over half a minute."""
    low, high = CONNECT_JITTER_MS
    return rng.randint(low, high)


def repair_due(last_repair_ms: int | None, now_ms: int, cooldown_ms: int) -> bool:
    return last_repair_ms is None or now_ms >= last_repair_ms + cooldown_ms


# --- recent-sync -----------------------------------------------------------------------------
#
# A thread needs recent-sync for a gap when it has a message at or after the gap's start (it
# was active across the gap, so something of it may be missing) and it has not been checked
# through the gap's end yet (``gapCheckedThroughMs``). Threads with no such gap cost nothing.
# Gaps stay open until they leave the look-back window: a thread that gets its first message
# after the gap only later (the phone delivered nothing of it since) becomes due then.


def live_gaps(gaps: Sequence[SyncGap], now_ms: int, lookback_ms: int) -> tuple[list[SyncGap], list[SyncGap]]:
    """(gaps still inside the look-back window, gaps that left it)."""
    horizon = now_ms - lookback_ms
    return [g for g in gaps if g.to_ms >= horizon], [g for g in gaps if g.to_ms < horizon]


def pending_gap(thread: ThreadDoc, gaps: Sequence[SyncGap]) -> SyncGap | None:
    """The oldest gap ``thread`` still needs checking against (None: no request for it).

    A thread checked through its newest message (anchored inside a gap: nothing had come after
    it) is due again only once a newer message arrives: requests reach only what is older than
    their anchor, so asking again from the same anchor could gain nothing."""
    last = thread.last_message_at_ms
    if last is None:
        return None
    checked = thread.gap_checked_through_ms or 0
    for gap in gaps:
        if gap.to_ms > checked and last >= gap.from_ms and last > checked:
            return gap
    return None
