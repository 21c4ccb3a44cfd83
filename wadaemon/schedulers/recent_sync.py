"""Recent-sync, the gap filler: a global actor beside ``accounts`` in the root supervisor.

The original backend only ever paged backwards from the oldest stored message, so what was
lost while it was down — *newer* than everything old — was never fetched. Recent-sync works
from recorded gaps instead (``actors.coverage``): every ``RECENT_SYNC_INTERVAL_MS``, for each
connected account with an open gap, under the account's recent-sync lease:

* threads active within ``RECENT_SYNC_LOOKBACK_MS`` (at most ``RECENT_SYNC_MAX_THREADS``)
  that were active across a gap and not yet checked through it (``policy.pending_gap``);
* for each: anchor at the oldest stored message *after* the gap (or, when nothing came after
  it, the newest one inside it), ask for older messages and page back until an answer
  reaches a message from before the gap (the gap is closed for the thread), the phone has no
  more, or ``RECENT_SYNC_MAX_MESSAGES_PER_THREAD`` messages were gained;
* the thread is then marked ``gapCheckedThroughMs = gap end`` so the next tick skips it — or,
  when the anchor was inside the gap, ``= the anchor's time`` only: a message newer than the
  anchor may still be missing (the last ones an instance received before it died, stranded in
  its journal), and the thread is due again once a newer message gives an anchor after them.

Accounts without a gap cost nothing: no lease, no read, no request, no write. That is also
why ``lastRecentSyncAt`` moves only on ticks that had work. A thread with messages missing in
a gap but no message after it cannot be anchored; it becomes due once it has one.
"""

from __future__ import annotations

import logging
from functools import partial

import msgspec
import trio

from wadaemon.config import Settings
from wadaemon.domain import (
    AccountDoc,
    Lease,
    MessageDoc,
    RecentSyncResult,
    ThreadPatch,
    ms_to_datetime,
)
from wadaemon.schedulers.backfill import ON_DEMAND_MAX
from wadaemon.schedulers.lease import LeaseBusy, LeaseLost, WallClock, run_under_lease
from wadaemon.schedulers.policy import live_gaps, pending_gap
from wadaemon.schedulers.view import RunningAccounts, ScheduledAccount
from wadaemon.status import DaemonStatus
from wadaemon.store.contract import StoreError
from wadaemon.store.runner import StoreRunner
from wadaemon.whatsapp.transport import HistoryRequestUnavailable, TransportError

log = logging.getLogger("wadaemon.recent_sync")

UNAVAILABLE_CODE = "history_requests_unavailable"


class GapFill(msgspec.Struct, kw_only=True):
    threads: int = 0
    messages: int = 0
    errors: int = 0
    requests: int = 0
    gaps_closed: int = 0
    gaps_open: int = 0


async def fill_gaps(account: ScheduledAccount, runner: StoreRunner, settings: Settings, clock: WallClock) -> GapFill:
    """One recent-sync pass over one account (see module doc). Raises
    ``HistoryRequestUnavailable`` when the transport cannot request history."""
    store = runner.store
    out = GapFill()
    now = clock()
    gaps, expired = live_gaps(account.open_gaps(), now, settings.recent_sync_lookback_ms)
    if expired:
        account.close_gaps(expired)
        out.gaps_closed += len(expired)
    out.gaps_open = len(gaps)
    if not gaps:
        return out
    horizon = now - settings.recent_sync_lookback_ms
    threads = await runner.read(store.list_threads, account.account_id, limit=settings.recent_sync_max_threads)
    patches: list[ThreadPatch] = []
    for thread in threads:
        if thread.last_message_at_ms is None or thread.last_message_at_ms < horizon:
            continue
        gap = pending_gap(thread, gaps)
        if gap is None:
            continue
        thread_id = f"{account.account_id}__{thread.client_jid}"
        anchor: MessageDoc | None = await runner.read(store.first_message_since, thread_id, gap.to_ms)
        through = gap.to_ms
        if anchor is None:
            anchor = await runner.read(store.newest_message, thread_id)
            through = anchor.ts_client_ms if anchor is not None else through
        if anchor is None or anchor.ts_client_ms < gap.from_ms:
            continue
        out.threads += 1
        gained = 0
        done = False
        while gained < settings.recent_sync_max_messages_per_thread:
            count = min(ON_DEMAND_MAX, settings.recent_sync_max_messages_per_thread - gained)
            out.requests += 1
            try:
                answer = await account.requests.ask(
                    thread_id, "recent_sync", partial(account.request_history, thread.client_jid, anchor, count),
                    timeout_s=settings.history_request_timeout_ms / 1000)
            except TransportError as exc:
                log.warning("[recent-sync] accountId=%s thread=%s request failed: %s", account.account_id, thread_id, exc)
                answer = None
            if answer is None:
                out.errors += 1
                break
            gained += answer.written
            older = answer.oldest
            if answer.end_of_history or older is None or older.ts_client_ms < gap.from_ms \
                    or older.ts_client_ms >= anchor.ts_client_ms:
                done = True
                break
            anchor = older
        out.messages += gained
        if done or gained >= settings.recent_sync_max_messages_per_thread:
            patches.append(ThreadPatch(thread_id=thread_id, gap_checked_through_ms=through))
    if patches and not settings.history_sync_dry_run:
        await runner.write(account.account_id, store.patch_threads, patches)
    return out


class RecentSync:
    def __init__(self, settings: Settings, runner: StoreRunner, accounts: RunningAccounts, *,
                 board: DaemonStatus, clock: WallClock) -> None:
        self.settings = settings
        self.runner = runner
        self.accounts = accounts
        self.board = board
        self.clock = clock
        self._said_unavailable: set[str] = set()
        self.ticks = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        interval_s = self.settings.recent_sync_interval_ms / 1000
        next_at = trio.current_time() + interval_s
        while True:
            self._show(next_at)
            await trio.sleep_until(next_at)
            next_at = trio.current_time() + interval_s
            await self.tick()

    def _show(self, next_at: float) -> None:
        in_ms = int((next_at - trio.current_time()) * 1000)
        for account in self.accounts.running_accounts():
            account.status.recent_sync_next_ms = self.clock() + in_ms

    async def tick(self) -> None:
        self.ticks += 1
        now = self.clock()
        due = []
        for account in self.accounts.running_accounts():
            live, expired = live_gaps(account.open_gaps(), now, self.settings.recent_sync_lookback_ms)
            if expired:
                account.close_gaps(expired)  # left the look-back window: nothing to anchor on
            if live and account.connected:
                due.append(account)
        limiter = trio.CapacityLimiter(self.settings.recent_sync_max_concurrency)
        async with trio.open_nursery() as nursery:
            for account in due:
                nursery.start_soon(self._sync, account, limiter)

    async def _sync(self, account: ScheduledAccount, limiter: trio.CapacityLimiter) -> None:
        account_id = account.account_id
        if not account.history_requests_available:
            if account_id not in self._said_unavailable:
                self._said_unavailable.add(account_id)
                log.warning("[recent-sync] accountId=%s %s: gaps stay open (%d), nothing is requested",
                            account_id, UNAVAILABLE_CODE, len(account.open_gaps()))
                await self._write(account_id, RecentSyncResult(ok=False, error_code=UNAVAILABLE_CODE,
                                                               gaps_open=len(account.open_gaps())))
            return
        async with limiter:
            t0 = trio.current_time()

            async def work(lease: Lease) -> GapFill:
                return await fill_gaps(account, self.runner, self.settings, self.clock)

            code: str | None = None
            try:
                fill = await run_under_lease(self.runner, "recent_sync", account_id, self.settings.instance_id, work,
                                             ttl_ms=self.settings.recent_sync_lease_ms, clock=self.clock,
                                             tag="recent-sync-lease", board=self.board)
            except LeaseBusy:
                return
            except HistoryRequestUnavailable:
                fill, code = GapFill(), UNAVAILABLE_CODE
            except LeaseLost:
                fill, code = GapFill(errors=1), "lock_lost"
            except StoreError as exc:
                log.warning("[recent-sync] accountId=%s store error: %s", account_id, exc)
                fill, code = GapFill(errors=1), "store_error"
            duration = int((trio.current_time() - t0) * 1000)
            result = RecentSyncResult(ok=code is None, threads=fill.threads, messages=fill.messages, errors=fill.errors,
                                      duration_ms=duration, requests=fill.requests, gaps_closed=fill.gaps_closed,
                                      gaps_open=fill.gaps_open, dry_run=self.settings.history_sync_dry_run,
                                      error_code=code)
            await self._write(account_id, result)
            log.info("[recent-sync] accountId=%s end threads=%d messages=%d requests=%d errors=%d gapsOpen=%d "
                     "gapsClosed=%d dryRun=%s durationMs=%d", account_id, fill.threads, fill.messages, fill.requests,
                     fill.errors, fill.gaps_open, fill.gaps_closed, result.dry_run, duration)

    async def _write(self, account_id: str, result: RecentSyncResult) -> None:
        patch = AccountDoc(last_recent_sync_at=ms_to_datetime(self.clock()), last_recent_sync_result=result)
        try:
            await self.runner.write(account_id, self.runner.store.update_account, account_id, patch)
        except StoreError as exc:
            log.warning("[recent-sync] accountId=%s status write failed: %s", account_id, exc)
