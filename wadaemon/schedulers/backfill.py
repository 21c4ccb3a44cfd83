"""One backfill run of one account (older history), and thread repair after it.

Backfill pages *backwards* from each thread's oldest stored message: for up to
``WHATSAPP_BACKFILL_THREADS`` most recently active threads, ask the phone for
``WHATSAPP_BACKFILL_MESSAGES_PER_THREAD`` (at most 50, WhatsApp's own cap) messages older than
the anchor, then older than the oldest message of that answer, until
``WHATSAPP_BACKFILL_COUNT`` messages were *gained* for the thread or the phone has no more.
Gained counts newly stored messages, so a thread already deep in the store costs a request
or two and moves on; the last request asks only for what is still missing, so a thread gets
exactly the count and no further.

Each thread ends with a recorded outcome (``BackfillThreadResult``): messages gained and
requests made, or why nothing was asked — ``exhausted`` (the phone said earlier it holds
nothing older: not asked again for ``WHATSAPP_BACKFILL_EXHAUSTED_RETRY_DAYS``), ``no_anchor``
(no stored message to anchor on: an on-demand request needs one), ``idle`` (older than
``WHATSAPP_BACKFILL_MAX_DAYS``) — or an error (``timeout``: no answer within
``WHATSAPP_HISTORY_REQUEST_TIMEOUT_MS``; the answer is still stored if it comes later).

The next anchor is the oldest message *of the answer*, not re-read from the store: one read
less per request, and dry run (which writes nothing) still walks back and counts correctly.

Repair (``repair_threads``) recomputes a thread's summary from its newest stored message when
the summary is missing or names a time no stored message has (the original backend stamped
``now`` on every history chunk, so its threads sort wrongly in the inbox forever); each broken
thread is logged ``[schema-guard]``. It costs one read per thread checked, at most
``AUTO_REPAIR_THREADS_LIMIT_PER_RUN`` threads, at most once per ``AUTO_REPAIR_COOLDOWN_MINUTES``.
"""

from __future__ import annotations

import logging
import math
from functools import partial

import msgspec

from wadaemon.config import Settings
from wadaemon.domain import (
    BackfillResult,
    BackfillThreadResult,
    ThreadDoc,
    ThreadPatch,
    datetime_to_ms,
)
from wadaemon.schedulers.lease import WallClock
from wadaemon.schedulers.view import ScheduledAccount
from wadaemon.store.runner import StoreRunner
from wadaemon.whatsapp.transport import TransportError

log = logging.getLogger("wadaemon.backfill")

#: WhatsApp answers an on-demand request with at most this many messages.
ON_DEMAND_MAX = 50


class BackfillRun(msgspec.Struct, kw_only=True):
    result: BackfillResult
    requests: int = 0
    dry_run: bool = False


def skip_reason(thread: ThreadDoc, now_ms: int, settings: Settings) -> str | None:
    """Why a thread gets no request in this run (None: ask)."""
    max_idle = settings.backfill_max_idle_ms
    if max_idle is not None and thread.last_message_at_ms is not None and now_ms - thread.last_message_at_ms > max_idle:
        return "idle"
    exhausted = thread.backfill_exhausted_at
    if exhausted is not None and now_ms < datetime_to_ms(exhausted) + settings.backfill_exhausted_retry_ms:
        return "exhausted"
    return None


async def backfill_account(account: ScheduledAccount, runner: StoreRunner, settings: Settings,
                           clock: WallClock) -> BackfillRun:
    """Backfill the account's most recently active threads; raises
    ``HistoryRequestUnavailable`` when the transport cannot request history."""
    store = runner.store
    dry_run = settings.history_sync_dry_run
    threads = await runner.read(store.list_threads, account.account_id, limit=settings.backfill_threads)
    run = BackfillRun(result=BackfillResult(), dry_run=dry_run)
    result = run.result
    patches: list[ThreadPatch] = []
    for thread in threads:
        thread_id = f"{account.account_id}__{thread.client_jid}"
        outcome = BackfillThreadResult(thread_id=thread_id)
        result.thread_results.append(outcome)
        now_ms = clock()
        reason = skip_reason(thread, now_ms, settings)
        anchor = None if reason else await runner.read(store.oldest_message, thread_id)
        if reason is None and anchor is None:
            reason = "no_anchor"
        if reason is not None or anchor is None:
            outcome.skipped = reason
            continue
        result.threads += 1
        exhausted = False
        budget = math.ceil(settings.backfill_count / max(1, min(settings.backfill_messages_per_thread, ON_DEMAND_MAX))) + 2
        while outcome.messages < settings.backfill_count and outcome.requests < budget:
            count = min(settings.backfill_messages_per_thread, ON_DEMAND_MAX, settings.backfill_count - outcome.messages)
            outcome.requests += 1
            run.requests += 1
            try:
                answer = await account.requests.ask(
                    thread_id, "backfill", partial(account.request_history, thread.client_jid, anchor, count),
                    timeout_s=settings.history_request_timeout_ms / 1000)
            except TransportError as exc:
                outcome.error = f"transport: {exc}"[:200]
                break
            if answer is None:
                outcome.error = "timeout"
                break
            outcome.messages += answer.written
            older = answer.oldest
            if answer.end_of_history or older is None or older.ts_client_ms >= anchor.ts_client_ms:
                exhausted = True
                break
            anchor = older
        if outcome.error:
            result.errors += 1
        result.messages += outcome.messages
        patches.append(ThreadPatch(thread_id=thread_id, last_backfill_ms=clock(),
                                   backfill_exhausted_ms=clock() if exhausted else None))
        if not account.connected:
            break  # the rest would only time out; the next run picks them up
    if patches and not dry_run:
        await runner.write(account.account_id, store.patch_threads, patches)
    return run


class RepairResult(msgspec.Struct, kw_only=True):
    checked: int = 0
    repaired: int = 0
    broken: int = 0


async def repair_threads(runner: StoreRunner, account_id: str, *, limit: int, dry_run: bool) -> RepairResult:
    """Recompute broken thread summaries from the newest stored message (see module doc)."""
    store = runner.store
    threads = await runner.read(store.list_threads, account_id, limit=limit)
    out = RepairResult()
    patches: list[ThreadPatch] = []
    for thread in threads:
        thread_id = f"{account_id}__{thread.client_jid}"
        out.checked += 1
        newest = await runner.read(store.newest_message, thread_id)
        stored_ms = newest.ts_client_ms if newest else None
        if thread.last_message_at_ms is not None and thread.last_message_at_ms == stored_ms:
            continue
        if thread.last_message_at_ms is None and newest is None:
            continue  # an empty thread (created by a name or a merge): nothing to recompute from
        out.broken += 1
        problem = ("missing_last_message" if thread.last_message_at_ms is None
                   else "summary_time_not_stored")
        log.warning("[schema-guard] accountId=%s thread=%s problem=%s summaryMs=%s newestStoredMs=%s repair=%s",
                    account_id, thread_id, problem, thread.last_message_at_ms, stored_ms,
                    "yes" if newest and not dry_run else "no")
        if newest is not None:
            patches.append(ThreadPatch(thread_id=thread_id, newest=newest, seen_last_ms=thread.last_message_at_ms))
    if patches and not dry_run:
        out.repaired = await runner.write(account_id, store.patch_threads, patches)
    return out
