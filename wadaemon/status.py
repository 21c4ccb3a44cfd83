"""What the running daemon shows about itself: the probe snapshot behind /ready and /diag.

Actors update a ``DaemonStatus`` in memory as they work (cheap attribute writes from the trio
thread); the HTTP thread reads ``snapshot()``, which copies under a lock into immutable
Structs. This keeps the probes answering when the store is down or the trio loop is busy:
nothing in /ready or /diag waits for the daemon.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from wadaemon.domain import InstanceDoc, Lease, SyncGap

Mode = Literal["starting", "active", "passive", "stopping"]


class HistoryProgress(msgspec.Struct):
    """History-sync progress of one account (per chunk, as it streams in)."""

    chunks: int = 0
    last_sync_type: str = ""
    last_chunk_order: int = 0
    progress: int = 0
    saved: int = 0
    skipped: int = 0
    errors: int = 0
    total: int = 0
    #: Messages this process wrote (the fields above are the pairing's cumulative totals).
    saved_by_this_run: int = 0


class AccountStatus(msgspec.Struct):
    account_id: str
    state: str = "connecting"
    phone_jid: str = ""
    journal_backlog: int = 0
    journal_oldest_pending_ms: int | None = None
    history: HistoryProgress = msgspec.field(default_factory=HistoryProgress)
    history_request_capability: str = "unknown"
    pending_receipts: int = 0
    pending_mutations: int = 0
    pending_entries: int = 0
    realtime_written: int = 0
    realtime_errors: int = 0
    #: Wall-clock ms of the last realtime commit and the newest message time it carried.
    last_realtime_ingest_ms: int | None = None
    last_realtime_message_ms: int | None = None
    receipts_applied: int = 0
    mutations_applied: int = 0
    rejected: int = 0
    capture_errors: int = 0
    last_error: str = ""
    #: Journal entries set aside as dead letters (wadaemon.journal), and the last one's error.
    dead_letters: int = 0
    last_dead_letter: str = ""
    #: Times the account's pipeline was restarted after a crash (a loop shows here and in /health).
    pipeline_restarts: int = 0
    #: Events the journal refused (full disk) held in memory for retry, and the append error.
    held_events: int = 0
    journal_error: str = ""
    #: When the oldest store call still waiting for an answer started (epoch ms), or None.
    store_waiting_since_ms: int | None = None
    #: The journal was found damaged at start (quarantined or short): what happened, for good.
    journal_damage: str = ""
    pipeline_restarted_at_ms: int | None = None

    # The schedulers' view (lists are replaced whole, never mutated: snapshots copy shallowly).
    #: Why auto-backfill does not run now: "" (eligible), cooldown, backoff, running, lock_busy,
    #: capability_unavailable, disconnected; and from when it may (None: when that changes).
    backfill_blocked: str = ""
    backfill_next_eligible_ms: int | None = None
    backfill_lock_holder: str = ""
    #: Threads with an on-demand history request in flight.
    outstanding_requests: list[str] = msgspec.field(default_factory=list)
    #: Spans whose events may be missing, waiting for recent-sync (durable in accounts/*).
    open_gaps: list[SyncGap] = msgspec.field(default_factory=list)
    recent_sync_next_ms: int | None = None

    # Counters of the schedulers' work since this instance began running the account (/metrics).
    #: Auto-backfill runs by result: ``success`` or the run's error code (``lock_lost``,
    #: ``store_unavailable`` …), and ``lock_busy`` (another instance held the lock).
    #: Replaced whole by ``counted``, never mutated (snapshots copy shallowly).
    backfill_runs: dict[str, int] = msgspec.field(default_factory=dict)
    #: On-demand history requests sent; answered in time; answered after their timeout (the
    #: answer is still stored); timed out.
    history_requests_sent: int = 0
    history_requests_answered: int = 0
    history_requests_answered_late: int = 0
    history_requests_timed_out: int = 0
    #: Gaps recorded here (a restart, a disconnect, a damaged journal) and gaps closed (they left
    #: recent-sync's look-back window).
    sync_gaps_opened: int = 0
    sync_gaps_closed: int = 0


def counted(counts: dict[str, int], key: str, by: int = 1) -> dict[str, int]:
    """``counts`` with ``key`` ``by`` higher, as a new dict: a snapshot taken meanwhile keeps the
    old one intact (the HTTP thread may be reading it)."""
    return {**counts, key: counts.get(key, 0) + by}


#: A pipeline restarted this recently (and more than once) is in a restart loop for /health.
RESTART_LOOP_WINDOW_MS = 120_000


def health_problems(accounts: list[AccountStatus], now_ms: int) -> list[str]:
    """Why /health says ``degraded`` beyond the store ping: one line per account problem an
    operator must act on (a pure rule over the status board, so it is tested without HTTP)."""
    problems = []
    for a in accounts:
        if a.journal_damage:
            problems.append(f"{a.account_id}: journal damaged: {a.journal_damage}"[:300])
        if a.held_events or a.journal_error:
            problems.append(f"{a.account_id}: journal refuses appends, {a.held_events} events held: "
                            f"{a.journal_error}"[:300])
        restarted = a.pipeline_restarted_at_ms
        if a.pipeline_restarts > 1 and restarted is not None and now_ms - restarted < RESTART_LOOP_WINDOW_MS:
            problems.append(f"{a.account_id}: pipeline restarting ({a.pipeline_restarts} restarts): {a.last_error}"[:300])
    return problems


class ClusterView(msgspec.Struct, frozen=True):
    """What the ownership actor last read: every instance heartbeat and account lease."""

    instances: list[InstanceDoc]
    leases: list[Lease]
    at_ms: int


#: A store call unanswered this long shows as unreachable in ``lastError``.
STORE_SLOW_MS = 3000


def with_store_wait(status: AccountStatus, now_ms: int) -> AccountStatus:
    """``status`` as /diag shows it: a store call waiting longer than ``STORE_SLOW_MS`` is
    reported in ``last_error`` even before the call itself fails."""
    since = status.store_waiting_since_ms
    if since is None or now_ms - since < STORE_SLOW_MS:
        return status
    note = f"store not answering for {(now_ms - since) // 1000}s (writes keep waiting)"
    return msgspec.structs.replace(status, last_error=f"{note}; {status.last_error}" if status.last_error else note)


class LeaseCounts(msgspec.Struct):
    """This instance's leases (one ``Store`` lease kind each: ``account`` ownership, the
    ``backfill`` lock, the ``recent_sync`` lease). Instance-wide, not per account: a lost
    account lease stops the account, which leaves the board, and its count must not leave
    with it."""

    #: Account ownership leases held now.
    account_leases_held: int = 0
    #: Renewal attempts that raised a store error (the lease may still be held), by kind.
    renewals_failed: dict[str, int] = msgspec.field(default_factory=dict)
    #: Leases lost while held (renewal refused, or not renewed before their deadline), by kind.
    lost: dict[str, int] = msgspec.field(default_factory=dict)


class DiagSnapshot(msgspec.Struct):
    ready: bool
    mode: Mode
    instance_id: str
    started_at_ms: int
    accounts: list[AccountStatus]
    supervision: Any = None
    cluster: ClusterView | None = None
    leases: LeaseCounts = msgspec.field(default_factory=LeaseCounts)


class DaemonStatus:
    """Mutable, thread-safe status board. Writers: trio actors. Reader: the HTTP thread."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.started_at_ms = int(time.time() * 1000)
        self._lock = threading.Lock()
        self._mode: Mode = "starting"
        self._accounts: dict[str, AccountStatus] = {}
        self._supervision: Callable[[], Any] | None = None
        self._cluster: ClusterView | None = None
        self._leases = LeaseCounts()

    def set_mode(self, mode: Mode) -> None:
        with self._lock:
            self._mode = mode

    @property
    def mode(self) -> Mode:
        with self._lock:
            return self._mode

    def account(self, account_id: str) -> AccountStatus:
        """The live status record of an account (created on first use). Mutate its fields
        only from the trio thread; readers get copies through ``snapshot``."""
        with self._lock:
            status = self._accounts.get(account_id)
            if status is None:
                status = self._accounts[account_id] = AccountStatus(account_id=account_id)
            return status

    def forget(self, account_id: str) -> None:
        with self._lock:
            self._accounts.pop(account_id, None)

    def set_cluster(self, view: ClusterView) -> None:
        with self._lock:
            self._cluster = view

    def lease_renewal_failed(self, kind: str, leases: int = 1) -> None:
        with self._lock:
            self._leases.renewals_failed = counted(self._leases.renewals_failed, kind, leases)

    def lease_lost(self, kind: str) -> None:
        with self._lock:
            self._leases.lost = counted(self._leases.lost, kind)

    def set_account_leases_held(self, count: int) -> None:
        with self._lock:
            self._leases.account_leases_held = count

    def set_supervision(self, provider: Callable[[], Any]) -> None:
        """``provider`` returns the supervision tree's health snapshot (a msgspec Struct tree).
        It is called from the HTTP thread: it must only read."""
        with self._lock:
            self._supervision = provider

    def has_account(self, account_id: str) -> bool:
        """Whether this instance runs the account (cheaper than a snapshot: no copies)."""
        with self._lock:
            return account_id in self._accounts

    def snapshot(self) -> DiagSnapshot:
        with self._lock:
            mode = self._mode
            now_ms = int(time.time() * 1000)
            accounts = [with_store_wait(msgspec.structs.replace(a, history=msgspec.structs.replace(a.history)), now_ms)
                        for a in self._accounts.values()]
            provider = self._supervision
            cluster = self._cluster
            leases = msgspec.structs.replace(self._leases)
        supervision = provider() if provider is not None else None
        return DiagSnapshot(
            ready=mode in ("active", "passive"),
            mode=mode,
            instance_id=self.instance_id,
            started_at_ms=self.started_at_ms,
            accounts=sorted(accounts, key=lambda a: a.account_id),
            supervision=supervision,
            cluster=cluster,
            leases=leases,
        )
