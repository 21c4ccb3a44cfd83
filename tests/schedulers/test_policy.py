"""The schedulers' pure rules (``wadaemon.schedulers.policy``): no trio, no store."""

from __future__ import annotations

import random

from wadaemon.domain import SyncGap, ThreadDoc
from wadaemon.schedulers.policy import (
    BackfillPolicy,
    BackfillState,
    blocked,
    connect_delay_ms,
    live_gaps,
    pending_gap,
    pick,
    repair_due,
)

POLICY = BackfillPolicy(cooldown_ms=60_000, backoff_ms=10_000, max_per_tick=2, max_concurrency=3)
NOW = 1_000_000


def state(account_id: str, **kw: object) -> BackfillState:
    return BackfillState(account_id=account_id, **kw)  # type: ignore[arg-type]


def test_connect_jitter_between_10_and_40_seconds() -> None:
    rng = random.Random(7)
    delays = [connect_delay_ms(rng) for _ in range(5000)]
    assert min(delays) >= 10_000 and max(delays) <= 40_000
    assert min(delays) < 11_000 and max(delays) > 39_000  # the whole range is used


def test_cooldown_after_success_and_its_end() -> None:
    s = state("a", last_success_ms=NOW - 1000, last_attempt_ms=NOW - 2000, last_at_ms=NOW - 1000)
    assert blocked(s, NOW, POLICY, connected=True) == ("cooldown", NOW - 1000 + 60_000)
    assert blocked(s, NOW + 59_000, POLICY, connected=True) == ("", None)


def test_backoff_follows_failures_only() -> None:
    failed = state("a", last_attempt_ms=NOW - 1000, last_failed=True)
    assert blocked(failed, NOW, POLICY, connected=True) == ("backoff", NOW - 1000 + 10_000)
    assert blocked(failed, NOW + 9_000, POLICY, connected=True) == ("", None)
    fine = state("b", last_attempt_ms=NOW - 1000)  # e.g. interrupted by a crash: no backoff
    assert blocked(fine, NOW, POLICY, connected=True) == ("", None)


def test_manual_bypasses_cooldown_and_backoff_but_not_the_lock_or_a_run() -> None:
    s = state("a", last_success_ms=NOW - 1, last_attempt_ms=NOW - 1, last_failed=True)
    assert blocked(s, NOW, POLICY, connected=True, manual=True) == ("", None)
    busy = state("a", busy_until_ms=NOW + 5)
    assert blocked(busy, NOW, POLICY, connected=True, manual=True) == ("lock_busy", NOW + 5)
    assert blocked(busy, NOW + 5, POLICY, connected=True, manual=True) == ("", None)
    assert blocked(state("a", running_here=True), NOW, POLICY, connected=True, manual=True)[0] == "running"
    assert blocked(state("a", unavailable=True), NOW, POLICY, connected=True, manual=True)[0] == "capability_unavailable"
    assert blocked(state("a"), NOW, POLICY, connected=False, manual=True)[0] == "disconnected"


def test_filter_before_cap_so_failing_accounts_cannot_starve_the_rest() -> None:
    """The four accounts with the oldest lastAutoBackfillAt are all in backoff; capping first
    (the original backend) would pick two of them and run nothing, tick after tick."""
    failing = [state(f"f{i}", last_at_ms=i, last_attempt_ms=NOW - 100, last_failed=True) for i in range(4)]
    healthy = [state("h1", last_at_ms=500), state("h0", last_at_ms=None), state("h2", last_at_ms=900)]
    chosen, eligible = pick([*failing, *healthy], {s.account_id for s in [*failing, *healthy]}, NOW, POLICY, running=0)
    assert eligible == 3
    assert chosen == ["h0", "h1"]  # never-run first, then oldest; cap 2


def test_concurrency_slots_counted_before_the_lock() -> None:
    accounts = [state(f"a{i}", last_at_ms=i) for i in range(5)]
    ids = {s.account_id for s in accounts}
    assert pick(accounts, ids, NOW, POLICY, running=2)[0] == ["a0"]  # 3 slots, 2 taken
    assert pick(accounts, ids, NOW, POLICY, running=3)[0] == []
    assert pick(accounts, ids - {"a0"}, NOW, POLICY, running=0)[0] == ["a1", "a2"]  # disconnected left out


def test_repair_cooldown() -> None:
    assert repair_due(None, NOW, 60_000)
    assert not repair_due(NOW - 1, NOW, 60_000)
    assert repair_due(NOW - 60_000, NOW, 60_000)


def thread(last_ms: int | None, checked: int | None = None) -> ThreadDoc:
    return ThreadDoc(account_id="a", client_jid="1@s.whatsapp.net", last_message_at_ms=last_ms,
                     gap_checked_through_ms=checked)


def test_only_threads_active_across_an_unchecked_gap_are_due() -> None:
    gaps = [SyncGap(from_ms=100, to_ms=200, reason="restart"), SyncGap(from_ms=300, to_ms=400, reason="disconnected")]
    assert pending_gap(thread(50), gaps) is None  # silent since before the first gap
    assert pending_gap(thread(None), gaps) is None
    assert pending_gap(thread(150), gaps) == gaps[0]
    assert pending_gap(thread(500), gaps) == gaps[0]  # the oldest first
    assert pending_gap(thread(500, checked=200), gaps) == gaps[1]
    assert pending_gap(thread(250, checked=200), gaps) is None
    assert pending_gap(thread(500, checked=400), gaps) is None
    # Checked through its newest message (anchored inside the gap): due again once a newer one came.
    assert pending_gap(thread(150, checked=150), gaps) is None
    assert pending_gap(thread(180, checked=150), gaps) == gaps[0]


def test_gaps_leave_with_the_lookback_window() -> None:
    gaps = [SyncGap(from_ms=100, to_ms=200, reason="restart"), SyncGap(from_ms=300, to_ms=400, reason="disconnected")]
    assert live_gaps(gaps, now_ms=1000, lookback_ms=700) == ([gaps[1]], [gaps[0]])
    assert live_gaps(gaps, now_ms=1000, lookback_ms=900) == (gaps, [])
