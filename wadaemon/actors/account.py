"""One account's actor subtree.

::

    account:{id}            one_for_one
    ├── status-writer       coalesced accounts/{id} writes
    ├── coverage            heartbeat coveredUntil; gaps recorded on (re)connect (recent-sync's work)
    ├── pipeline            one_for_all: a crash anywhere replays the journal from the start
    │   ├── dispatcher      journal (live entries) -> translate -> resolve identity -> work
    │   ├── history-dispatcher  the same for history-sync chunks, on its own cursor
    │   ├── history         history-sync chunks, one store call each (<= 500 writes per commit)
    │   ├── realtime        group-committed live messages, coalesced thread summaries
    │   ├── groups          group subjects onto their threads (asked from WhatsApp when unknown)
    │   └── updates         receipts, edits, revokes, reactions (kept until their message lands)
    └── socket              the WhatsApp transport, delivering into the journal

The journal, identity map and status writer belong to the subtree and survive pipeline
restarts; the socket is started last, so nothing is handed over before the pipeline can drain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import trio

from supervisors import ChildSpec, Supervisor
from wadaemon.actors.context import AccountContext
from wadaemon.actors.coverage import Coverage
from wadaemon.actors.dispatcher import run_dispatcher, run_history_dispatcher
from wadaemon.actors.groups import run_group_namer
from wadaemon.actors.history import run_history_ingester
from wadaemon.actors.realtime import run_realtime_writer
from wadaemon.actors.status_writer import AccountStatusWriter
from wadaemon.actors.updates import run_update_applier
from wadaemon.actors.work import EntryLedger
from wadaemon.config import Settings
from wadaemon.domain import AccountDoc, MessageDoc, SyncGap
from wadaemon.identity import IdentityResolver
from wadaemon.journal import HeldAppends, Journal, JournalCorrupt, JournalReader, quarantine
from wadaemon.status import AccountStatus, DaemonStatus
from wadaemon.store.runner import StoreRunner
from wadaemon.whatsapp.capture import CaptureWriter
from wadaemon.whatsapp.transport import RawEvent, Transport

log = logging.getLogger("wadaemon.account")

JOURNAL_MAX_BACKLOG = 20_000
#: How long stopping the transport may take at shutdown before it is abandoned (its thread is
#: a daemon thread: whatever it still does cannot hold the process, and the journal has every
#: event it handed over).
TRANSPORT_STOP_S = 5.0


class JournalSink:
    """What the transport delivers into: the journal, then the capture file (when configured).
    ``deliver`` returns once the event is durable; a full journal blocks it (backpressure).

    The journal comes first because it is what keeps the event; the capture is a debugging copy
    whose failures the writer only counts and logs, so a full disk under the capture directory
    never costs an event. The count is shown on the status board (/diag ``captureErrors``).

    An append the journal refuses (a full disk) is held and retried (``HeldAppends``), never
    dropped; the held count and the error are on the status board (``heldEvents``,
    ``journalError``) and make /health ``degraded``. Every transport delivers through here, so
    the rule holds for all of them.
    """

    def __init__(self, journal: Journal, capture: CaptureWriter | None, status: AccountStatus) -> None:
        self.appends = HeldAppends(journal, label=status.account_id, on_change=self._held_changed)
        self._backlog = journal.backlog
        self._capture = capture
        self._status = status

    def _held_changed(self, held: int, error: str) -> None:
        self._status.held_events = held
        self._status.journal_error = error

    def deliver(self, event: RawEvent) -> None:
        self.appends.append(event)
        # Live for /diag even while nothing drains (a store outage): one int from this thread.
        self._status.journal_backlog = self._backlog()
        if self._capture is not None and not self._capture.write(event):
            # One int assignment from the transport's thread: atomic, and the count is the
            # writer's own (kept under its lock), so concurrent deliveries cannot lose one.
            self._status.capture_errors = self._capture.failures

    def close(self) -> None:
        self.appends.close()
        if self._capture is not None:
            self._capture.close()


def open_journal(account_id: str, path: Path, status: AccountStatus) -> tuple[Journal, SyncGap | None]:
    """The account's journal, whatever state its file is in (``wadaemon.journal``, "Damage").

    An unreadable file is quarantined (moved aside, never deleted) and a fresh journal started,
    so one damaged account never keeps the others from starting; a journal found short is
    used as it is. Either way the account says so loudly — an ERROR line, ``journalDamage`` on
    the status board (/diag, /health degraded) — and returns the gap to record (a ``SyncGap``
    in ``accounts/*.syncGaps``, through ``Coverage.record_gap``: what recent-sync fills)."""
    now_ms = int(time.time() * 1000)
    try:
        journal = Journal(path, max_backlog=JOURNAL_MAX_BACKLOG)
    except JournalCorrupt as exc:
        moved = quarantine(path, now_ms)
        journal = Journal(path, max_backlog=JOURNAL_MAX_BACKLOG)
        since = journal.loss.since_ms if journal.loss is not None else 0
        status.journal_damage = f"unreadable journal quarantined as {moved.name} ({exc.__cause__ or exc})"[:500]
        log.error("[journal] accountId=%s DAMAGED: %s; started with a fresh journal, events received "
                  "since %d may be missing (gap recorded)", account_id, status.journal_damage, since)
        return journal, SyncGap(from_ms=since, to_ms=now_ms, reason="journal-quarantined")
    loss = journal.loss
    if loss is None:
        return journal, None
    lost = loss.watermark_seq - loss.last_seq
    status.journal_damage = (f"journal is short: entries {loss.last_seq + 1}..{loss.watermark_seq} "
                             f"({lost}) are gone (file truncated or its WAL lost)")
    log.error("[journal] accountId=%s DAMAGED: %s; events received since %d may be missing (gap recorded)",
              account_id, status.journal_damage, loss.since_ms)
    return journal, SyncGap(from_ms=loss.since_ms, to_ms=now_ms, reason="journal-short")


class AccountRuntime:
    """The long-lived parts of one account, and the supervisor tree that runs its actors."""

    def __init__(
        self,
        account_id: str,
        *,
        settings: Settings,
        runner: StoreRunner,
        board: DaemonStatus,
        transport: Transport,
        journal_dir: Path,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.account_id = account_id
        self.transport = transport
        journal_dir.mkdir(parents=True, exist_ok=True)
        status = board.account(account_id)
        self.journal, gap = open_journal(account_id, journal_dir / f"{account_id}.sqlite", status)
        self.reader = JournalReader(self.journal, history=False)
        self.history_reader = JournalReader(self.journal, history=True)
        status.dead_letters = self.journal.dead_letter_count()
        capture = (CaptureWriter(settings.capture_dir / f"{account_id}.jsonl", label=account_id)
                   if settings.capture_dir is not None else None)
        self.sink = JournalSink(self.journal, capture, status)
        status.capture_errors = capture.failures if capture is not None else 0
        status.history_request_capability = "available" if transport.supports_history_requests else "unavailable"
        status_writer = AccountStatusWriter(account_id, runner)
        status_writer.post(AccountDoc(history_sync_capability=status.history_request_capability,
                                      owner_instance=settings.instance_id, state="connecting"))
        self.ctx = AccountContext(
            account_id=account_id,
            settings=settings,
            runner=runner,
            reader=self.reader,
            history_reader=self.history_reader,
            identity=IdentityResolver(lookup=transport.resolve_lid),
            status=status,
            status_writer=status_writer,
            ledger=EntryLedger(self.reader.mark_done, on_progress=self._progressed),
            group_info=transport.group_info,
        )
        self.coverage = Coverage(clock or (lambda: int(time.time() * 1000)), on_change)
        self.ctx.on_connection = self.coverage.on_connection
        if gap is not None:
            self.coverage.record_gap(gap.from_ms, gap.to_ms, gap.reason)
        self.requests = self.ctx.requests
        self.status = status
        self._progress = trio.Event()
        self._pipeline_generations = 0
        self._pipeline_tree = self._pipeline()
        self.supervisor = Supervisor(
            f"account:{account_id}",
            [
                ChildSpec("status-writer", status_writer.run),
                ChildSpec("coverage", partial(self.coverage.run, self.ctx)),
                ChildSpec("pipeline", self._pipeline_tree.run),
                ChildSpec("socket", self._run_socket),
            ],
            strategy="one_for_one",
        )

    def _pipeline(self) -> Supervisor:
        ctx = self.ctx

        async def dispatcher(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await run_dispatcher(ctx, task_status=task_status)

        async def history_dispatcher(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await run_history_dispatcher(ctx, task_status=task_status)

        async def history(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await run_history_ingester(ctx, task_status=task_status)

        async def realtime(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await run_realtime_writer(ctx, task_status=task_status)

        async def updates(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await run_update_applier(ctx, task_status=task_status)

        async def groups(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await run_group_namer(ctx, task_status=task_status)

        return Supervisor(
            "pipeline",
            [ChildSpec("history", history), ChildSpec("realtime", realtime),
             ChildSpec("updates", updates), ChildSpec("groups", groups), ChildSpec("dispatcher", dispatcher),
             ChildSpec("history-dispatcher", history_dispatcher)],
            strategy="one_for_all",
            on_start=self._pipeline_starting,
        )

    def _pipeline_starting(self) -> None:
        """Fresh channels for each generation; every generation after the first is a restart,
        counted where /diag and /health see it."""
        self.ctx.open_channels()
        self.reader.rewind()  # a restarted pipeline forgot what it held: everything replays
        self.history_reader.rewind()
        self.ctx.ledger.reset()
        status = self.ctx.status
        if self._pipeline_generations:
            status.pipeline_restarts += 1
            status.pipeline_restarted_at_ms = int(time.time() * 1000)
            failed = [c.last_error for c in self._pipeline_tree.snapshot().children if c.last_error]
            if failed:
                status.last_error = f"pipeline restarted: {failed[0]}"[:500]
            log.warning("[pipeline] accountId=%s restarted (%d restarts): %s",
                        self.account_id, status.pipeline_restarts, status.last_error)
        self._pipeline_generations += 1

    async def _run_socket(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.to_thread.run_sync(self.transport.start, self.sink)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.move_on_after(TRANSPORT_STOP_S, shield=True) as scope:
                await trio.to_thread.run_sync(self.transport.stop, abandon_on_cancel=True)
            if scope.cancelled_caught:
                log.warning("account accountId=%s transport did not stop within %.0fs: abandoned",
                            self.account_id, TRANSPORT_STOP_S)

    # -- what the schedulers see (wadaemon.schedulers.view.ScheduledAccount) -------------------
    @property
    def connected(self) -> bool:
        return self.status.state == "connected"

    @property
    def connects(self) -> int:
        return self.coverage.connects

    @property
    def history_requests_available(self) -> bool:
        return self.transport.supports_history_requests

    def open_gaps(self) -> list[SyncGap]:
        return list(self.coverage.gaps)

    def close_gaps(self, gaps: Sequence[SyncGap]) -> None:
        self.coverage.close_gaps(gaps)

    async def request_history(self, chat_jid: str, anchor: MessageDoc, count: int) -> None:
        await trio.to_thread.run_sync(partial(
            self.transport.request_history, chat_jid, anchor.id, anchor.direction == "outbound",
            anchor.ts_client_ms, count))

    def _progressed(self) -> None:
        backlog = self.ctx.status.journal_backlog = self.journal.backlog()
        if backlog == 0:  # the dispatcher refreshes it per batch; drained means no oldest
            self.ctx.status.journal_oldest_pending_ms = None
        self._progress.set()
        self._progress = trio.Event()

    def drained(self) -> bool:
        """Nothing is held for the journal and nothing is left in it but updates waiting for a
        message that has not arrived (those stay journaled until it does, or until they expire)."""
        return (self.ctx.quiet() and self.sink.appends.held() == 0
                and self.journal.backlog() <= self.ctx.status.pending_entries)

    async def wait_drained(self) -> None:
        """Until ``drained()``; woken by the ledger, never by polling."""
        while not self.drained():
            await self._progress.wait()

    def close(self) -> None:
        self.sink.close()
        self.journal.close()
