"""Prometheus metrics: what ``GET /metrics`` exposes, through prometheus-client.

Two kinds of source, chosen so the hot paths pay (almost) nothing:

* **The status board, read at scrape time.** Actors already keep per-account counters and
  gauges on ``DaemonStatus`` (plain attribute writes from the trio thread: messages written,
  receipts applied, journal backlog, connection state, history-sync progress …).
  ``BoardCollector`` turns one ``snapshot()`` into metric families when Prometheus scrapes,
  so ingesting a message costs no extra work for metrics at all, and /diag, the operator page
  and /metrics can never disagree.
* **Events the board does not keep**: store write latency and errors (``observe_write``, one
  call per commit from ``StoreRunner``, in the worker thread) and HTTP requests (the HTTP
  middleware). These are prometheus-client Histogram/Counter objects; their ``observe`` /
  ``inc`` take a lock for a microsecond, once per commit or request, never per message.

Each daemon (and each test) gets its own ``CollectorRegistry``: several daemons in one test
process must not share counters, and nothing here touches prometheus-client's global registry.

Naming (Prometheus conventions): ``wadaemon_`` prefix, base units in the name (``_seconds``,
``_ratio``, ``_entries``), ``_total`` on counters (prometheus-client appends it). Labels are
bounded: ``account_id`` (the accounts this instance runs), ``source``, ``state``, ``kind``,
``operation`` (a store method name), ``route`` (the route *pattern*, ``/api/x/{accountId}``,
never the concrete path), ``status``. Never a thread, message or request id.

The schedulers' view on the board (open gaps, outstanding history requests, why backfill
waits) is exposed as gauges, their work as counters the actors keep on the board: backfill
runs by result, history requests sent / answered / timed out, gaps opened and closed. Leases
are counted per instance, not per account (``LeaseCounts``): a lost account lease takes the
account off the board, and the count must stay. ``BoardCollector.collect`` is the one place to
extend; docs/install.md lists every family, and a test compares that table with what is
collected here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from wadaemon.status import AccountStatus, DaemonStatus, DiagSnapshot, LeaseCounts
from wadaemon.store.contract import StoreError, StoreUnavailable

#: The connection states of docs/data-model.md (``accounts/*.state``): each gets a 0/1 sample.
ACCOUNT_STATES = ("pairing", "connecting", "connected", "disconnected", "logged_out")
MODES = ("starting", "active", "passive", "stopping")
#: ``wadaemon.store.contract.LeaseKind``: each gets a sample (0 until something happens).
LEASE_KINDS = ("account", "backfill", "recent_sync")

#: Store commits: sub-millisecond (SQLite) to seconds (Firestore under an outage).
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def error_kind(error: BaseException) -> str:
    """``unavailable`` (retried), ``error`` (the store refused: a bug or bad data), ``other``."""
    if isinstance(error, StoreUnavailable):
        return "unavailable"
    if isinstance(error, StoreError):
        return "error"
    return "other"


class Metrics:
    """The registry of one daemon: the board collector plus the event metrics."""

    def __init__(self, board: DaemonStatus, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self.store_write_seconds = Histogram(
            "wadaemon_store_write_seconds", "Duration of store writes (one commit each)",
            ["operation"], buckets=COMMIT_BUCKETS, registry=self.registry)
        self.store_errors = Counter(
            "wadaemon_store_write_errors", "Store writes that raised, by kind",
            ["operation", "kind"], registry=self.registry)
        self.http_requests = Counter(
            "wadaemon_http_requests", "HTTP requests answered, by route pattern and status",
            ["route", "status"], registry=self.registry)
        self.registry.register(BoardCollector(board, clock))
        self._write_histograms: dict[str, Histogram] = {}

    def observe_write(self, operation: str, seconds: float, error: BaseException | None) -> None:
        """``StoreRunner``'s ``on_write``: called from store worker threads. The labelled child
        is looked up once per operation (``labels()`` costs more than the observation)."""
        histogram = self._write_histograms.get(operation)
        if histogram is None:
            histogram = self._write_histograms.setdefault(operation, self.store_write_seconds.labels(operation))
        histogram.observe(seconds)
        if error is not None:
            self.store_errors.labels(operation, error_kind(error)).inc()

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """Body and content type for a scrape's ``Accept`` header: prometheus-client's own
        negotiation (the 0.0.4 text format by default, OpenMetrics when asked for)."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class BoardCollector(Collector):
    """Metric families from one status-board snapshot, built at each scrape."""

    def __init__(self, board: DaemonStatus, clock: Callable[[], float]) -> None:
        self._board = board
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        snapshot = self._board.snapshot()
        yield from _instance(snapshot)
        yield from _accounts(snapshot.accounts, self._clock())


def _instance(snapshot: DiagSnapshot) -> Iterator[Metric]:
    info = GaugeMetricFamily("wadaemon_instance_info", "This instance (value 1)", labels=["instance_id"])
    info.add_metric([snapshot.instance_id], 1)
    yield info
    started = GaugeMetricFamily("wadaemon_start_time_seconds", "When this process started (epoch s)")
    started.add_metric([], snapshot.started_at_ms / 1000)
    yield started
    mode = GaugeMetricFamily("wadaemon_mode", "1 for the current mode (/ready), 0 otherwise", labels=["mode"])
    for name in MODES:
        mode.add_metric([name], 1 if snapshot.mode == name else 0)
    yield mode
    accounts = GaugeMetricFamily("wadaemon_accounts", "Accounts this instance runs")
    accounts.add_metric([], len(snapshot.accounts))
    yield accounts
    yield from _leases(snapshot.leases)


def _leases(leases: LeaseCounts) -> Iterator[Metric]:
    held = GaugeMetricFamily("wadaemon_account_leases_held", "Account ownership leases this instance holds")
    held.add_metric([], leases.account_leases_held)
    failed = CounterMetricFamily("wadaemon_lease_renewals_failed",
                                 "Lease renewals that raised a store error, by lease kind", labels=["lease"])
    lost = CounterMetricFamily("wadaemon_leases_lost", "Leases lost while held, by lease kind", labels=["lease"])
    for kind in LEASE_KINDS:
        failed.add_metric([kind], leases.renewals_failed.get(kind, 0))
        lost.add_metric([kind], leases.lost.get(kind, 0))
    yield from (held, failed, lost)


def _accounts(accounts: list[AccountStatus], now_s: float) -> Iterator[Metric]:
    def counter(name: str, doc: str, extra: list[str] | None = None) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=["account_id", *(extra or [])])

    def gauge(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=["account_id", *(extra or [])])

    ingested = counter("wadaemon_messages_ingested", "Messages written to the store, by source",
                       ["source"])
    receipts = counter("wadaemon_receipts_applied", "Delivery/read/played receipts applied")
    mutations = counter("wadaemon_mutations_applied", "Edits, revokes and reactions applied")
    rejected = counter("wadaemon_events_rejected", "WhatsApp events that could not be translated")
    capture = counter("wadaemon_capture_errors", "Raw events the capture file could not take")
    held = gauge("wadaemon_journal_held_events", "Events held in memory because the journal refuses appends")
    dead = gauge("wadaemon_dead_letters", "Journal entries set aside because the store refused them")
    restarts = counter("wadaemon_pipeline_restarts", "Restarts of the account's pipeline after a crash")
    pending = gauge("wadaemon_updates_pending", "Receipts and mutations waiting for their message",
                    ["kind"])
    backlog = gauge("wadaemon_journal_backlog_entries", "Journal entries not yet committed")
    oldest = gauge("wadaemon_journal_oldest_pending_age_seconds",
                   "Age of the oldest uncommitted journal entry (0 when drained)")
    state = gauge("wadaemon_account_state", "1 for the account's connection state, 0 otherwise",
                  ["state"])
    progress = gauge("wadaemon_history_sync_progress_ratio", "History-sync progress WhatsApp reports (0-1)")
    chunks = counter("wadaemon_history_sync_chunks", "History-sync chunks ingested")
    capability = gauge("wadaemon_history_requests_available",
                       "1 when the transport can send on-demand history requests")
    last_ingest = gauge("wadaemon_last_realtime_ingest_timestamp_seconds",
                        "When a realtime message was last committed (epoch s)")
    gaps = gauge("wadaemon_sync_gaps_open", "Spans whose events may be missing, waiting for recent-sync")
    outstanding = gauge("wadaemon_history_requests_outstanding",
                        "On-demand history requests waiting for their answer")
    blocked = gauge("wadaemon_backfill_blocked", "1 for why auto-backfill does not run now", ["reason"])
    next_backfill = gauge("wadaemon_backfill_next_eligible_timestamp_seconds",
                          "When auto-backfill may run next (epoch s)")
    runs = counter("wadaemon_backfill_runs", "Auto-backfill runs by result (success or error code)", ["result"])
    sent = counter("wadaemon_history_requests_sent", "On-demand history requests sent to the phone")
    answered = counter("wadaemon_history_requests_answered",
                       "On-demand history requests answered, in time or after their timeout", ["timing"])
    timed_out = counter("wadaemon_history_requests_timed_out", "On-demand history requests not answered in time")
    opened = counter("wadaemon_sync_gaps_opened", "Gaps recorded (spans whose events may be missing)")
    closed = counter("wadaemon_sync_gaps_closed", "Gaps closed (left recent-sync's look-back window)")
    for a in accounts:
        account = a.account_id
        ingested.add_metric([account, "history_sync"], a.history.saved)
        ingested.add_metric([account, "realtime"], a.realtime_written)
        receipts.add_metric([account], a.receipts_applied)
        mutations.add_metric([account], a.mutations_applied)
        rejected.add_metric([account], a.rejected)
        capture.add_metric([account], a.capture_errors)
        held.add_metric([account], a.held_events)
        dead.add_metric([account], a.dead_letters)
        restarts.add_metric([account], a.pipeline_restarts)
        pending.add_metric([account, "receipt"], a.pending_receipts)
        pending.add_metric([account, "mutation"], a.pending_mutations)
        backlog.add_metric([account], a.journal_backlog)
        oldest_ms = a.journal_oldest_pending_ms
        oldest.add_metric([account], max(0.0, now_s - oldest_ms / 1000) if oldest_ms and a.journal_backlog else 0.0)
        for name in ACCOUNT_STATES:
            state.add_metric([account, name], 1 if a.state == name else 0)
        progress.add_metric([account], a.history.progress / 100)
        chunks.add_metric([account], a.history.chunks)
        capability.add_metric([account], 1 if a.history_request_capability == "available" else 0)
        if a.last_realtime_ingest_ms is not None:
            last_ingest.add_metric([account], a.last_realtime_ingest_ms / 1000)
        gaps.add_metric([account], len(a.open_gaps))
        outstanding.add_metric([account], len(a.outstanding_requests))
        if a.backfill_blocked:
            blocked.add_metric([account, a.backfill_blocked], 1)
        if a.backfill_next_eligible_ms is not None:
            next_backfill.add_metric([account], a.backfill_next_eligible_ms / 1000)
        for result, count in sorted(a.backfill_runs.items()):
            runs.add_metric([account, result], count)
        sent.add_metric([account], a.history_requests_sent)
        answered.add_metric([account, "in_time"], a.history_requests_answered)
        answered.add_metric([account, "late"], a.history_requests_answered_late)
        timed_out.add_metric([account], a.history_requests_timed_out)
        opened.add_metric([account], a.sync_gaps_opened)
        closed.add_metric([account], a.sync_gaps_closed)
    yield from (ingested, receipts, mutations, rejected, capture, held, dead, restarts, pending, backlog, oldest, state, progress,
                chunks, capability, last_ingest, gaps, outstanding, blocked, next_backfill, runs, sent, answered,
                timed_out, opened, closed)
