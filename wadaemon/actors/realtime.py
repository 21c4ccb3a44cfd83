"""The realtime writer: group commit of live messages, coalesced thread summaries.

Messages are committed in groups: a commit goes out when 500 writes are gathered or
``GATHER_S`` after the first one arrived, whichever comes first — under light load a message is
stored within milliseconds, under heavy load each commit carries hundreds.

Thread summaries are the hot documents (a busy group would otherwise be written once per
message, past Firestore's one write per second per document): they are folded in memory and
written at most once per ``SUMMARY_INTERVAL_S``. A journal entry is settled only once both its
message and its thread's summary are committed, so a crash in between replays it.
"""

from __future__ import annotations

import logging
import math
import time
from functools import partial

import trio

from wadaemon.actors.context import AccountContext
from wadaemon.actors.retry import retry_store, write_isolating
from wadaemon.actors.work import MergeWork, MessageWork, RealtimeItem
from wadaemon.domain import AccountDoc, MessageDoc, ms_to_datetime
from wadaemon.records import summarise
from wadaemon.store.contract import StoreError, StoreUnavailable

log = logging.getLogger("wadaemon.realtime")

MAX_BATCH = 500
GATHER_S = 0.005
SUMMARY_INTERVAL_S = 1.0


class _SummaryBuffer:
    """Newest message per thread since the last summary flush, plus the entries it settles."""

    def __init__(self) -> None:
        self.docs: dict[str, list[MessageDoc]] = {}
        self.seqs: list[int] = []
        self.last_flush = -math.inf

    def add(self, docs: list[MessageDoc], seqs: list[int]) -> None:
        for doc in docs:
            self.docs.setdefault(doc.client_jid, []).append(doc)
        self.seqs.extend(seqs)

    def due_at(self) -> float:
        return self.last_flush + SUMMARY_INTERVAL_S if self.seqs else math.inf


async def run_realtime_writer(ctx: AccountContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    buffer = _SummaryBuffer()
    task_status.started()
    try:
        while True:
            batch = await _gather(ctx.realtime_recv, until=buffer.due_at())
            if batch:
                await _commit(ctx, batch, buffer)
            if trio.current_time() >= buffer.due_at():
                await _flush_summaries(ctx, buffer)
    finally:
        # On shutdown, what is committed but not yet summarised gets its summary (bounded).
        with trio.move_on_after(10) as scope:
            scope.shield = True
            if buffer.seqs:
                await _flush_summaries(ctx, buffer)


async def _gather(recv: trio.MemoryReceiveChannel[RealtimeItem], *, until: float) -> list[RealtimeItem]:
    """Wait (until ``until`` at most) for a first item, then gather for ``GATHER_S``.

    Only this function's own timeouts cancel its receives, so items already taken are always
    returned, never dropped by a cancelled wait. Commits happen outside any timeout.
    """
    batch: list[RealtimeItem] = []
    with trio.move_on_at(until):
        batch.append(await recv.receive())
    if not batch:
        return batch
    with trio.move_on_after(GATHER_S):
        while len(batch) < MAX_BATCH:
            batch.append(await recv.receive())
    while len(batch) < MAX_BATCH:
        try:
            batch.append(recv.receive_nowait())
        except trio.WouldBlock:
            break
    return batch


async def _commit(ctx: AccountContext, batch: list[RealtimeItem], buffer: _SummaryBuffer) -> None:
    store = ctx.runner.store
    merges = [item for item in batch if isinstance(item, MergeWork)]
    for merge in merges:
        try:
            moved = await retry_store(ctx, "realtime", partial(
                ctx.runner.write, ctx.account_id, store.merge_threads, ctx.account_id, merge.mapping.lid, merge.mapping.pn))
        except StoreUnavailable:
            raise
        except StoreError as exc:
            await ctx.set_aside(merge.seq, f"merge {merge.mapping.lid}: {type(exc).__name__}: {exc}"[:500])
            continue
        log.info("[identity] accountId=%s merged lid=%s into=%s moved=%d",
                 ctx.account_id, merge.mapping.lid, merge.mapping.pn, moved)
    if merges:
        await ctx.ledger.settle([m.seq for m in merges])
    messages = [item for item in batch if isinstance(item, MessageWork)]
    if not messages:
        return
    docs = _dedupe([m.doc for m in messages])
    _, refused = await write_isolating(ctx, "realtime", docs, partial(
        ctx.runner.write, ctx.account_id, store.upsert_messages))
    if refused:
        bad_keys = {(doc.thread_id, doc.id): error for doc, error in refused}
        for m in messages:
            error = bad_keys.get((m.doc.thread_id, m.doc.id))
            if error is not None:
                log.info("[realtime] accountId=%s remoteJid=%s msg=%s ts=%d type=%s writeOK=false",
                         ctx.account_id, m.doc.client_jid, m.doc.id, m.doc.ts_client_ms, m.doc.message_type)
                await ctx.set_aside(m.seq, f"message {m.doc.id}: {error}")
        messages = [m for m in messages if (m.doc.thread_id, m.doc.id) not in bad_keys]
        docs = [doc for doc in docs if (doc.thread_id, doc.id) not in bad_keys]
        if not docs:
            return
    now_ms = int(time.time() * 1000)
    newest = max(doc.ts_client_ms for doc in docs)
    ctx.status.realtime_written += len(docs)
    ctx.status.last_realtime_ingest_ms = now_ms
    ctx.status.last_realtime_message_ms = newest
    for doc in docs:
        log.info("[realtime] accountId=%s remoteJid=%s msg=%s ts=%d type=%s writeOK=true",
                 ctx.account_id, doc.client_jid, doc.id, doc.ts_client_ms, doc.message_type)
    ctx.status_writer.post(AccountDoc(
        last_realtime_ingest_at=ms_to_datetime(now_ms),
        last_realtime_message_at=ms_to_datetime(newest),
        last_realtime_error="",
    ), routine=True)
    buffer.add(docs, [m.seq for m in messages])
    await ctx.announce_committed({(d.thread_id, d.id) for d in docs})


async def _flush_summaries(ctx: AccountContext, buffer: _SummaryBuffer) -> None:
    docs = [doc for per_thread in buffer.docs.values() for doc in per_thread]
    summaries = summarise(docs, names=ctx.names.names_of(buffer.docs))
    if summaries:
        # A summary the store refuses is derived data (its messages are stored; thread repair
        # recomputes it): logged, not a reason to hold the entries.
        _, refused = await write_isolating(ctx, "realtime", summaries, partial(
            ctx.runner.write, ctx.account_id, ctx.runner.store.advance_threads))
        for summary, error in refused:
            log.error("[realtime] accountId=%s summary of %s refused by the store: %s",
                      ctx.account_id, summary.client_jid, error)
    seqs = buffer.seqs
    buffer.docs, buffer.seqs = {}, []
    buffer.last_flush = trio.current_time()
    await ctx.ledger.settle(seqs)


def _dedupe(docs: list[MessageDoc]) -> list[MessageDoc]:
    """One document per key in a commit (the same message may arrive twice in one group)."""
    seen: dict[tuple[str, str], MessageDoc] = {}
    for doc in docs:
        seen.setdefault((doc.thread_id, doc.id), doc)
    return list(seen.values())
