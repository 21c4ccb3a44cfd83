"""The update applier: receipts (monotonic status) and edits / revokes / reactions.

A receipt or mutation may reach us before the message it targets (WhatsApp delivers receipts
for messages still in history sync, and a reaction can overtake its message on reconnect).
Those are kept, with their journal entry left unsettled so a crash cannot lose them, and
retried when a writer reports the target committed. Targets that never arrive are given up
after ``PENDING_TTL_MS`` (counted, logged), so the journal's bound is not eaten by receipts
for messages from before this device was linked.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from functools import partial

import trio

from wadaemon.actors.context import AccountContext
from wadaemon.actors.retry import write_isolating
from wadaemon.actors.work import Committed, UpdateWork
from wadaemon.domain import MessageMutation, ReceiptUpdate

log = logging.getLogger("wadaemon.updates")

PENDING_TTL_MS = 60 * 60 * 1000
MAX_BATCH = 500

Key = tuple[str, str]


class _Pending:
    """Updates waiting for their message, indexed by (threadId, messageId)."""

    def __init__(self) -> None:
        self.receipts: dict[Key, list[ReceiptUpdate]] = defaultdict(list)
        self.mutations: dict[Key, list[MessageMutation]] = defaultdict(list)
        # journal entry -> (keys still waiting, received time)
        self.entries: dict[int, tuple[set[Key], int]] = {}

    def size(self) -> tuple[int, int]:
        return sum(map(len, self.receipts.values())), sum(map(len, self.mutations.values()))


async def run_update_applier(ctx: AccountContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    pending = _Pending()
    ctx.updates_busy = False
    task_status.started()
    while True:
        items = [await ctx.updates_recv.receive()]
        ctx.updates_busy = True
        while len(items) < MAX_BATCH:
            try:
                items.append(ctx.updates_recv.receive_nowait())
            except trio.WouldBlock:
                break
        work = [item for item in items if isinstance(item, UpdateWork)]
        committed: set[Key] = set()
        notices = 0
        for item in items:
            if isinstance(item, Committed):
                committed |= item.keys
                notices += 1
        if work:
            await _apply_new(ctx, pending, work)
        if committed:
            await _retry_pending(ctx, pending, committed)
        await _expire(ctx, pending)
        ctx.status.pending_receipts, ctx.status.pending_mutations = pending.size()
        ctx.status.pending_entries = len(pending.entries)
        ctx.committed_in_flight -= notices
        ctx.updates_busy = False
        ctx.ledger.notify()


async def _apply_new(ctx: AccountContext, pending: _Pending, work: list[UpdateWork]) -> None:
    receipts = [r for w in work for r in w.receipts]
    mutations = [m for w in work for m in w.mutations]
    missing_receipts, missing_mutations, refused = await _apply(ctx, receipts, mutations)
    missing_keys = {(r.thread_id, r.message_id) for r in missing_receipts} | {
        (m.thread_id, m.message_id) for m in missing_mutations}
    if refused:
        kept = []
        for w in work:
            keys = {(r.thread_id, r.message_id) for r in w.receipts} | {(m.thread_id, m.message_id) for m in w.mutations}
            errors = [refused[k] for k in keys if k in refused]
            if errors:
                await ctx.set_aside(w.seq, errors[0])
            else:
                kept.append(w)
        work = kept
    for r in missing_receipts:
        pending.receipts[(r.thread_id, r.message_id)].append(r)
    for m in missing_mutations:
        pending.mutations[(m.thread_id, m.message_id)].append(m)
    settled = []
    for w in work:
        keys = {(r.thread_id, r.message_id) for r in w.receipts} | {(m.thread_id, m.message_id) for m in w.mutations}
        waiting = keys & missing_keys
        if waiting:
            pending.entries[w.seq] = (waiting, w.received_ms or int(time.time() * 1000))
        else:
            settled.append(w.seq)
    await ctx.ledger.settle(settled)


async def _retry_pending(ctx: AccountContext, pending: _Pending, committed: set[Key]) -> None:
    ready = committed & (pending.receipts.keys() | pending.mutations.keys())
    if not ready:
        return
    receipts = [r for key in ready for r in pending.receipts.pop(key, [])]
    mutations = [m for key in ready for m in pending.mutations.pop(key, [])]
    missing_receipts, missing_mutations, refused = await _apply(ctx, receipts, mutations)
    for seq, (waiting, _received) in list(pending.entries.items()):
        errors = [refused[k] for k in waiting if k in refused]
        if errors:
            del pending.entries[seq]
            await ctx.set_aside(seq, errors[0])
    for r in missing_receipts:  # committed but not readable yet: keep waiting
        pending.receipts[(r.thread_id, r.message_id)].append(r)
    for m in missing_mutations:
        pending.mutations[(m.thread_id, m.message_id)].append(m)
    still = {(r.thread_id, r.message_id) for r in missing_receipts} | {
        (m.thread_id, m.message_id) for m in missing_mutations}
    await _release_keys(ctx, pending, ready - still)


async def _expire(ctx: AccountContext, pending: _Pending) -> None:
    cutoff = int(time.time() * 1000) - PENDING_TTL_MS
    stale = [seq for seq, (_, received) in pending.entries.items() if received < cutoff]
    if not stale:
        return
    keys = set().union(*(pending.entries[seq][0] for seq in stale))
    for key in keys:
        pending.receipts.pop(key, None)
        pending.mutations.pop(key, None)
    log.warning("[receipts] accountId=%s gave up on %d updates whose message never arrived",
                ctx.account_id, len(keys))
    await _release_keys(ctx, pending, keys)


async def _release_keys(ctx: AccountContext, pending: _Pending, keys: set[Key]) -> None:
    settled = []
    for seq, (waiting, _received) in list(pending.entries.items()):
        waiting -= keys
        if not waiting:
            del pending.entries[seq]
            settled.append(seq)
    await ctx.ledger.settle(settled)


async def _apply(
    ctx: AccountContext, receipts: list[ReceiptUpdate], mutations: list[MessageMutation]
) -> tuple[list[ReceiptUpdate], list[MessageMutation], dict[Key, str]]:
    """Apply what can be; returns the updates whose message is missing, and the keys whose
    update the store refused for good (with the error: their entries become dead letters)."""
    store = ctx.runner.store
    missing_receipts: list[ReceiptUpdate] = []
    missing_mutations: list[MessageMutation] = []
    refused: dict[Key, str] = {}
    if receipts:
        results, bad = await write_isolating(ctx, "receipts", receipts, partial(
            ctx.runner.write, ctx.account_id, store.apply_receipts))
        missing_receipts = [r for result in results for r in result]
        refused.update(((r.thread_id, r.message_id), error) for r, error in bad)
        ctx.status.receipts_applied += len(receipts) - len(missing_receipts) - len(bad)
    if mutations:
        m_results, m_bad = await write_isolating(ctx, "realtime", mutations, partial(
            ctx.runner.write, ctx.account_id, store.apply_mutations))
        missing_mutations = [m for result in m_results for m in result]
        refused.update(((m.thread_id, m.message_id), error) for m, error in m_bad)
        ctx.status.mutations_applied += len(mutations) - len(missing_mutations) - len(m_bad)
    return missing_receipts, missing_mutations, refused
