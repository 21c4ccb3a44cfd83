"""``GET /metrics``: the status board and the event metrics in Prometheus text format, valid
for ``promtool check metrics`` (lint included), with bounded labels."""

from __future__ import annotations

import re
import subprocess

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.http.conftest import Serve
from tests.http.fakes import fetch as get
from tests.ops.demo_process import REPO
from wadaemon.domain import SyncGap
from wadaemon.metrics import Metrics
from wadaemon.status import DaemonStatus
from wadaemon.store.contract import StoreError, StoreUnavailable
from wadaemon.store.runner import StoreRunner
from wadaemon.store.sqlite import SqliteStore


def promtool_check(text: str) -> None:
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    """One sample of a scrape of ``metrics`` (KeyError: not exposed)."""
    return samples(metrics.exposition()[0].decode())[(name, tuple(sorted(labels.items())))]


def fill(board: DaemonStatus) -> None:
    board.set_mode("active")
    a = board.account("shop-a")
    a.state = "connected"
    a.realtime_written = 5
    a.history.saved, a.history.chunks, a.history.progress = 300, 3, 40
    a.receipts_applied, a.mutations_applied, a.rejected = 7, 2, 1
    a.journal_backlog, a.journal_oldest_pending_ms = 4, 1_704_164_645_000 - 30_000
    a.history_request_capability = "available"
    a.last_realtime_ingest_ms = 1_704_164_640_000
    a.open_gaps = [SyncGap(from_ms=1, to_ms=2, reason="restart")]
    a.outstanding_requests = ["t1", "t2"]
    a.backfill_blocked = "cooldown"
    a.backfill_next_eligible_ms = 1_704_164_700_000
    a.backfill_runs = {"success": 3, "lock_lost": 1}
    a.history_requests_sent, a.history_requests_answered, a.history_requests_answered_late = 9, 6, 1
    a.history_requests_timed_out = 2
    a.sync_gaps_opened, a.sync_gaps_closed = 4, 3
    board.set_account_leases_held(1)
    board.lease_renewal_failed("account", 2)
    board.lease_lost("backfill")
    board.account("shop-b")  # connecting, nothing yet


def test_metrics_expose_the_board_and_pass_promtool(serve: Serve, board: DaemonStatus) -> None:
    fill(board)
    server = serve(clock=lambda: 1_704_164_645.0)
    reply = get(server.port, "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = reply.raw.decode()
    promtool_check(text)
    found = samples(text)
    a = (("account_id", "shop-a"),)
    assert found[("wadaemon_messages_ingested_total", (*a, ("source", "realtime")))] == 5
    assert found[("wadaemon_messages_ingested_total", (*a, ("source", "history_sync")))] == 300
    assert found[("wadaemon_receipts_applied_total", a)] == 7
    assert found[("wadaemon_mutations_applied_total", a)] == 2
    assert found[("wadaemon_events_rejected_total", a)] == 1
    assert found[("wadaemon_journal_backlog_entries", a)] == 4
    assert found[("wadaemon_journal_oldest_pending_age_seconds", a)] == 30
    assert found[("wadaemon_history_sync_progress_ratio", a)] == 0.4
    assert found[("wadaemon_account_state", (*a, ("state", "connected")))] == 1
    assert found[("wadaemon_account_state", (("account_id", "shop-b"), ("state", "connecting")))] == 1
    assert found[("wadaemon_account_state", (*a, ("state", "connecting")))] == 0
    assert found[("wadaemon_history_requests_available", a)] == 1
    assert found[("wadaemon_last_realtime_ingest_timestamp_seconds", a)] == 1_704_164_640
    assert found[("wadaemon_sync_gaps_open", a)] == 1
    assert found[("wadaemon_history_requests_outstanding", a)] == 2
    assert found[("wadaemon_backfill_blocked", (*a, ("reason", "cooldown")))] == 1
    assert found[("wadaemon_backfill_next_eligible_timestamp_seconds", a)] == 1_704_164_700
    assert found[("wadaemon_backfill_runs_total", (*a, ("result", "success")))] == 3
    assert found[("wadaemon_backfill_runs_total", (*a, ("result", "lock_lost")))] == 1
    assert found[("wadaemon_history_requests_sent_total", a)] == 9
    assert found[("wadaemon_history_requests_answered_total", (*a, ("timing", "in_time")))] == 6
    assert found[("wadaemon_history_requests_answered_total", (*a, ("timing", "late")))] == 1
    assert found[("wadaemon_history_requests_timed_out_total", a)] == 2
    assert found[("wadaemon_sync_gaps_opened_total", a)] == 4
    assert found[("wadaemon_sync_gaps_closed_total", a)] == 3
    assert found[("wadaemon_mode", (("mode", "active"),))] == 1
    assert found[("wadaemon_accounts", ())] == 2
    assert found[("wadaemon_account_leases_held", ())] == 1
    assert found[("wadaemon_lease_renewals_failed_total", (("lease", "account"),))] == 2
    assert found[("wadaemon_lease_renewals_failed_total", (("lease", "backfill"),))] == 0
    assert found[("wadaemon_leases_lost_total", (("lease", "backfill"),))] == 1


def doc_table() -> dict[str, tuple[str, set[str]]]:
    """docs/install.md's metrics table: name -> (type, label names)."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in (REPO / "docs" / "install.md").read_text().splitlines():
        match = re.match(r"\| `(wadaemon_\w+)` \| (\w+) \|([^|]*)\|", line)
        if match:
            name, kind, labels = match.groups()
            assert name not in rows, f"{name} listed twice"
            rows[name] = (kind, {label.strip() for label in re.sub(r"\([^)]*\)", "", labels).split(",")
                                 if label.strip()})
    return rows


def test_the_docs_list_every_metric_with_its_type_and_labels() -> None:
    board = DaemonStatus("inst-1")
    fill(board)
    metrics = Metrics(board)
    metrics.observe_write("upsert_messages", 0.01, StoreUnavailable("down"))
    metrics.http_requests.labels("/health", "200").inc()
    exposed: dict[str, tuple[str, set[str]]] = {}
    for family in metrics.registry.collect():
        assert family.samples, f"fill() leaves {family.name} without a sample: its labels go unchecked"
        name = f"{family.name}_total" if family.type == "counter" else family.name
        exposed[name] = (family.type, {label for s in family.samples for label in s.labels} - {"le"})
    assert doc_table() == exposed


def test_http_requests_are_counted_by_route_pattern_never_by_path(serve: Serve) -> None:
    server = serve()
    for path in ("/health", "/health", "/nope/1", "/nope/2", "/diag"):
        get(server.port, path)
    text = get(server.port, "/metrics").raw.decode()
    found = samples(text)
    assert found[("wadaemon_http_requests_total", (("route", "/health"), ("status", "200")))] == 2
    assert found[("wadaemon_http_requests_total", (("route", "unmatched"), ("status", "404")))] == 2
    assert not any("/nope" in str(labels) for _, labels in found)
    promtool_check(text)


@pytest.mark.parametrize(("error", "kind"), [(StoreUnavailable("down"), "unavailable"),
                                             (StoreError("bad"), "error"), (ValueError("bug"), "other")])
async def test_store_writes_are_timed_and_errors_counted_by_kind(
        error: BaseException, kind: str, sqlite_store: SqliteStore) -> None:
    metrics = Metrics(DaemonStatus("inst-1"))
    runner = StoreRunner(sqlite_store, on_write=metrics.observe_write)

    def update_account(account_id: str) -> None:
        raise error

    await runner.write("a", sqlite_store.ping)
    with pytest.raises(type(error)):
        await runner.write("a", update_account, "a")
    await trio.lowlevel.checkpoint()
    found = samples(metrics.exposition()[0].decode())
    assert found[("wadaemon_store_write_seconds_count", (("operation", "ping"),))] == 1
    assert found[("wadaemon_store_write_seconds_count", (("operation", "update_account"),))] == 1
    assert found[("wadaemon_store_write_errors_total", (("kind", kind), ("operation", "update_account")))] == 1
