"""The history ingester: one history-sync chunk at a time, handed to the store whole; and
the separate step for on-demand answers (``ingest_answer``, see ``actors.ondemand``).

A chunk is written, its threads' summaries advanced once (ordered by the messages' own
timestamps, never by arrival), progress posted, and only then is its journal entry settled: a
crash mid-chunk replays the whole chunk, and idempotent writes make the replay free.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import trio
from msgspec.structs import replace

from wadaemon.actors.context import AccountContext
from wadaemon.actors.ondemand import OnDemandAnswer
from wadaemon.actors.retry import retry_store, write_isolating
from wadaemon.actors.work import AnswerWork, HistoryWork
from wadaemon.domain import AccountDoc, HistorySyncResult, ms_to_datetime
from wadaemon.journal import HistoryTotals
from wadaemon.records import renamed, summarise

log = logging.getLogger("wadaemon.history")


async def run_history_ingester(ctx: AccountContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await _load_totals(ctx)
    async for work in ctx.history_recv:
        if isinstance(work, AnswerWork):
            await ingest_answer(ctx, work)
        else:
            await ingest_chunk(ctx, work)


async def _load_totals(ctx: AccountContext) -> None:
    """The pairing's cumulative totals (``wadaemon.journal``, "History totals") onto the status
    board; a journal without them (new, or started fresh after damage) is seeded from the
    account document, the durable copy in the store."""
    totals = await ctx.reader.history_totals()
    if totals is None:
        doc = await retry_store(ctx, "history-sync", partial(ctx.runner.read, ctx.runner.store.get_account, ctx.account_id))
        result = doc.last_history_sync_result if doc is not None else None
        if doc is not None and result is not None:
            seed = HistoryTotals(chunks=doc.history_sync_count or 0, saved=result.saved, skipped=result.skipped,
                                 errors=result.errors, total=result.total)
            await ctx.reader.set_history_totals(seed, only_if_absent=True)
        totals = await ctx.reader.history_totals() or HistoryTotals()
    _show(ctx, totals)


def _show(ctx: AccountContext, totals: HistoryTotals) -> None:
    progress = ctx.status.history
    progress.chunks, progress.saved, progress.skipped = totals.chunks, totals.saved, totals.skipped
    progress.errors, progress.total = totals.errors, totals.total


async def ingest_chunk(ctx: AccountContext, work: HistoryWork) -> None:
    store = ctx.runner.store
    progress = ctx.status.history
    dry_run = ctx.settings.history_sync_dry_run
    started = time.monotonic()
    saved = 0
    unchanged = work.skipped
    docs = work.docs
    refused: list[str] = []
    if not dry_run:
        results, bad = await write_isolating(ctx, "history-sync", docs, partial(
            ctx.runner.write, ctx.account_id, store.upsert_messages))
        saved = sum(r.written for r in results)
        unchanged += sum(r.unchanged for r in results)
        if bad:
            poisoned = {id(doc) for doc, _ in bad}
            docs = [doc for doc in docs if id(doc) not in poisoned]
            refused += [f"message {doc.id}: {error}" for doc, error in bad]
        summaries = summarise(docs, names=work.names, groups=work.groups) + renamed(ctx.account_id, work.renames)
        if summaries:
            _, bad_summaries = await write_isolating(ctx, "history-sync", summaries, partial(
                ctx.runner.write, ctx.account_id, store.advance_threads))
            refused += [f"thread {s.client_jid}: {error}" for s, error in bad_summaries]
    else:
        saved = len(docs)
    # Counted once per entry, however often a crash makes it replay (wadaemon.journal).
    _show(ctx, await ctx.reader.count_history(work.seq, HistoryTotals(
        chunks=1, saved=saved, skipped=unchanged, errors=len(refused), total=len(work.docs) + work.skipped)))
    progress.saved_by_this_run += saved
    progress.last_sync_type = work.sync_type
    progress.last_chunk_order = work.chunk_order
    progress.progress = work.progress
    now_ms = int(time.time() * 1000)
    ctx.status_writer.post(AccountDoc(
        last_history_sync_at=ms_to_datetime(now_ms),
        history_sync_count=progress.chunks,
        last_history_sync_result=HistorySyncResult(
            saved=progress.saved, skipped=progress.skipped, errors=progress.errors,
            total=progress.total, dry_run=dry_run,
        ),
    ), routine=True)
    log.info(
        "[history-sync] accountId=%s type=%s chunk=%d progress=%d conversations=%d messages=%d saved=%d skipped=%d dryRun=%s durationMs=%d",
        ctx.account_id, work.sync_type, work.chunk_order, work.progress, len(work.names) or len({d.client_jid for d in work.docs}),
        len(work.docs), saved, unchanged, dry_run, int((time.monotonic() - started) * 1000),
    )
    if not dry_run:
        await ctx.announce_committed({(d.thread_id, d.id) for d in docs})
    if refused:  # the rest of the chunk landed; the raw chunk waits as a dead letter
        await ctx.set_aside(work.seq, f"{len(refused)} refused, first {refused[0]}"[:500])
    await ctx.ledger.settle([work.seq])


async def ingest_answer(ctx: AccountContext, work: AnswerWork) -> None:
    """Write one ON_DEMAND answer (per thread: its messages, then its summary), settle its
    journal entry, then tell the waiting run what it brought. Documents the store refuses for
    good are isolated as in ``ingest_chunk`` (the raw answer waits as a dead letter)."""
    store = ctx.runner.store
    dry_run = ctx.settings.history_sync_dry_run
    requests = ctx.requests
    now_ms = int(time.time() * 1000)
    answers: list[OnDemandAnswer] = []
    committed: set[tuple[str, str]] = set()
    refused: list[str] = []
    sources = {thread_id: requests.source_for(thread_id) for thread_id in work.threads}
    for thread_id in work.threads:
        source = sources[thread_id]
        docs = [d if d.sync_source == source else replace(d, sync_source=source)
                for d in work.docs if d.thread_id == thread_id]
        written = len(docs)
        if docs and not dry_run:
            results, bad = await write_isolating(ctx, source, docs, partial(
                ctx.runner.write, ctx.account_id, store.upsert_messages))
            written = sum(r.written for r in results)
            if bad:
                poisoned = {id(doc) for doc, _ in bad}
                docs = [doc for doc in docs if id(doc) not in poisoned]
                refused += [f"message {doc.id}: {error}" for doc, error in bad]
            summaries = summarise(docs, names=work.names, groups=work.groups,
                                  backfilled_at_ms=now_ms if source == "backfill" else None)
            _, bad_summaries = await write_isolating(ctx, source, summaries, partial(
                ctx.runner.write, ctx.account_id, store.advance_threads))
            refused += [f"thread {s.client_jid}: {error}" for s, error in bad_summaries]
            committed |= {(d.thread_id, d.id) for d in docs}
        oldest = min(docs, key=lambda d: d.ts_client_ms) if docs else None
        answers.append(OnDemandAnswer(thread_id=thread_id, received=len(docs), written=written,
                                      oldest=oldest, end_of_history=thread_id in work.ended))
    if committed:
        await ctx.announce_committed(committed)
    if refused:
        await ctx.set_aside(work.seq, f"{len(refused)} refused, first {refused[0]}"[:500])
    await ctx.ledger.settle([work.seq])
    for answer in answers:
        waited = requests.deliver(answer)
        log.info("[on-demand] accountId=%s thread=%s source=%s received=%d written=%d endOfHistory=%s late=%s dryRun=%s",
                 ctx.account_id, answer.thread_id, sources[answer.thread_id], answer.received,
                 answer.written, answer.end_of_history, not waited, dry_run)
