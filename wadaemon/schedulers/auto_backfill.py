"""The auto-backfill scheduler: a global actor beside ``accounts`` in the root supervisor.

When it runs an account: 10-40 s after each connect (``policy.connect_delay_ms``), on every
``WHATSAPP_BACKFILL_INTERVAL_SECONDS`` tick, and on a manual trigger (``trigger_backfill``,
what the HTTP API calls). Which accounts, in what order and how many at once is decided by
``policy`` (filter cooldown/backoff, then cap; concurrency counted before the lock); this actor
only keeps the state those rules read and carries the decisions out.

**It knows what it wrote.** Each account's document is read once, the first time the
scheduler sees the account (last success, last attempt, a ``running: true`` left by a dead
process); from then on the scheduler keeps that state from its own writes, so a tick over 200
accounts that are all inside their cooldown reads nothing and writes nothing (``bench``).

**One run** (``_run``) takes ``whatsapp_backfill_locks/{accountId}`` through
``lease.run_under_lease`` (renewed at a third of ``AUTO_BACKFILL_LEASE_MS``; a run whose lock
is lost is cancelled and reports ``lock_lost``), writes ``lastAutoBackfillStatus`` running,
backfills (``backfill.backfill_account``), repairs threads when the repair cooldown allows,
and writes the outcome. Status writes go straight to the store (not through the coalescing
status writer): they are two per run, and an operator must see ``running`` while it runs.

**Crash safety.** A ``running: true`` found at first sight with no live lock (absent or
expired) is rewritten at once as an error ``{errorCode: interrupted}`` naming the dead holder
and when it started; with the lock still live (perhaps a healthy run elsewhere) nothing is
touched and the account is ``lock_busy`` until the lock's expiry, after which the next tick
runs it. Being interrupted does not start the attempt backoff: the account did nothing wrong.

**Disabled** (either docs/configuration.md flag false): the actor still runs, for manual triggers only —
no connect or periodic run, no periodic repair.

**Capability unavailable** (neonize 0.5.2, a replay): such an account is never run; the first
time it is seen the status says so once (``errorCode: history_requests_unavailable``) and
``/diag`` shows ``capability_unavailable``; thread repair still runs on the periodic tick. If
the transport later reports the capability (a new library), the account becomes eligible.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from datetime import datetime
from typing import Literal

import trio

from wadaemon.config import Settings
from wadaemon.domain import (
    AccountDoc,
    AutoBackfillStatus,
    BackfillStats,
    Lease,
    datetime_to_ms,
    ms_to_datetime,
)
from wadaemon.schedulers.backfill import BackfillRun, backfill_account, repair_threads
from wadaemon.schedulers.lease import LeaseBusy, LeaseLost, WallClock, run_under_lease
from wadaemon.schedulers.policy import (
    BackfillPolicy,
    BackfillState,
    blocked,
    connect_delay_ms,
    pick,
    repair_due,
)
from wadaemon.schedulers.view import RunningAccounts, ScheduledAccount, TriggerOutcome
from wadaemon.status import DaemonStatus, counted
from wadaemon.store.contract import StoreError, StoreUnavailable
from wadaemon.store.runner import StoreRunner
from wadaemon.whatsapp.transport import HistoryRequestUnavailable, TransportError

log = logging.getLogger("wadaemon.auto_backfill")

Trigger = Literal["connect", "periodic", "manual"]

UNAVAILABLE_CODE = "history_requests_unavailable"
UNAVAILABLE_MESSAGE = ("this WhatsApp client cannot request older history from the phone "
                       "(neonize without request_history_sync); backfill and recent-sync are off, "
                       "thread repair still runs")


def _ms(value: datetime | None) -> int | None:
    return datetime_to_ms(value) if value is not None else None


class AutoBackfill:
    def __init__(self, settings: Settings, runner: StoreRunner, accounts: RunningAccounts, *,
                 board: DaemonStatus, clock: WallClock, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.runner = runner
        self.accounts = accounts
        self.board = board
        self.clock = clock
        self.policy = BackfillPolicy.of(settings)
        self._rng = rng or random.Random()
        self.states: dict[str, BackfillState] = {}
        self._repaired_at: dict[str, int | None] = {}
        self._seen_connects: dict[str, int] = {}
        self._due: dict[str, float] = {}  # connect trigger: account -> trio time
        self._queued: list[str] = []  # manual triggers waiting for a slot
        self._running = 0
        self._wake = trio.Event()
        self._loading = trio.Lock()  # one first-sight load per account, however many callers
        self._nursery: trio.Nursery | None = None
        self.ticks = 0
        #: Called after every run with (account id, outcome status): tests and bench watch it.
        self.on_finished: Callable[[str, AutoBackfillStatus], None] | None = None

    # -- the loop ----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        auto = self.settings.auto_backfill_enabled
        interval_s = self.settings.auto_backfill_interval_ms / 1000 if auto else math.inf
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watch_accounts)
            task_status.started()
            next_tick = trio.current_time() + interval_s
            while True:
                self._wake = trio.Event()
                await self._note_accounts()
                now = trio.current_time()
                if now >= next_tick:
                    next_tick = now + interval_s
                    await self.tick()
                due = [a for a, at in self._due.items() if at <= now]
                for account_id in due:
                    del self._due[account_id]
                await self._start_due(due)
                self._start_queued()
                self._show()
                with trio.move_on_at(min([next_tick, *self._due.values()])):
                    await self._wake.wait()

    def _poke(self) -> None:
        self._wake.set()

    async def _watch_accounts(self) -> None:
        while True:
            await self.accounts.changed().wait()
            self._poke()

    def _account(self, account_id: str) -> ScheduledAccount | None:
        for account in self.accounts.running_accounts():
            if account.account_id == account_id:
                return account
        return None

    async def _note_accounts(self) -> None:
        """First sight of an account: load its state. A new connect: schedule its run."""
        for account in self.accounts.running_accounts():
            state = await self._state(account)
            state.unavailable = not account.history_requests_available
            seen = self._seen_connects.get(account.account_id, 0)
            if account.connects > seen:
                self._seen_connects[account.account_id] = account.connects
                if not state.unavailable and self.settings.auto_backfill_enabled:
                    delay = connect_delay_ms(self._rng) / 1000
                    self._due[account.account_id] = trio.current_time() + delay
                    log.info("[auto-backfill] accountId=%s connected: backfill considered in %.0fs",
                             account.account_id, delay)

    async def _state(self, account: ScheduledAccount) -> BackfillState:
        state = self.states.get(account.account_id)
        if state is not None:
            return state
        async with self._loading:
            return self.states.get(account.account_id) or await self._load(account)

    async def _load(self, account: ScheduledAccount) -> BackfillState:
        doc = await self.runner.read(self.runner.store.get_account, account.account_id)
        state = BackfillState(account_id=account.account_id)
        self.states[account.account_id] = state
        self._repaired_at[account.account_id] = None
        if doc is None:
            state.unavailable = not account.history_requests_available
            await self._say_unavailable(account, state)
            return state
        state.last_at_ms = _ms(doc.last_auto_backfill_at)
        state.last_success_ms = _ms(doc.last_auto_backfill_success_at)
        state.last_attempt_ms = _ms(doc.last_auto_backfill_attempt_at)
        self._repaired_at[account.account_id] = _ms(doc.last_auto_repair_at)
        status = doc.last_auto_backfill_status
        state.last_failed = status is not None and status.ok is False and status.error_code not in (
            UNAVAILABLE_CODE, "interrupted")
        if status is not None and status.running:
            await self._recover_stale(account.account_id, state, status)
        state.unavailable = not account.history_requests_available
        if not (status is not None and status.error_code == UNAVAILABLE_CODE):
            await self._say_unavailable(account, state)
        return state

    async def _recover_stale(self, account_id: str, state: BackfillState, status: AutoBackfillStatus) -> None:
        lease = await self.runner.atomic(self.runner.store.read_lease, "backfill", account_id)
        now = self.clock()
        if lease is not None and lease.expires_at_ms > now:
            state.busy_until_ms, state.busy_holder = lease.expires_at_ms, lease.owner_id
            log.info("[auto-backfill] accountId=%s status says running (holder=%s); its lock is live until %d",
                     account_id, status.holder, lease.expires_at_ms)
            return
        started = status.started_at.isoformat() if status.started_at else "?"
        message = (f"the run started at {started} by {status.holder or '?'} never finished "
                   f"(its process stopped); its lock has expired")
        log.warning("[auto-backfill] accountId=%s %s", account_id, message)
        await self._write(account_id, AccountDoc(last_auto_backfill_status=AutoBackfillStatus(
            running=False, ok=False, error_code="interrupted", error_message=message,
            duration_ms=max(0, now - (_ms(status.started_at) or now)))))

    async def _say_unavailable(self, account: ScheduledAccount, state: BackfillState) -> None:
        if not state.unavailable:
            return
        log.warning("[auto-backfill] accountId=%s %s: %s", account.account_id, UNAVAILABLE_CODE, UNAVAILABLE_MESSAGE)
        await self._write(account.account_id, AccountDoc(
            last_auto_backfill_status=AutoBackfillStatus(
                running=False, ok=False, error_code=UNAVAILABLE_CODE, error_message=UNAVAILABLE_MESSAGE, duration_ms=0),
            last_backfill_status="error", last_backfill_error=UNAVAILABLE_MESSAGE))

    # -- ticks and triggers --------------------------------------------------------------------
    async def tick(self) -> None:
        """The periodic tick: pick (policy) and start; repair accounts that cannot backfill."""
        self.ticks += 1
        now = self.clock()
        accounts = self.accounts.running_accounts()
        connected = {a.account_id for a in accounts if a.connected}
        states = [self.states[a.account_id] for a in accounts if a.account_id in self.states]
        chosen, eligible = pick(states, connected, now, self.policy, running=self._running)
        log.info("📚 [auto-backfill] AutoBackfill tick: eligibleAccounts=%d starting=%d running=%d",
                 eligible, len(chosen), self._running)
        for account_id in chosen:
            self._due.pop(account_id, None)
            self._launch(account_id, "periodic")
        for account in accounts:
            state = self.states.get(account.account_id)
            if state is not None and state.unavailable and self._repair_due(account.account_id, now):
                await self._repair(account.account_id)

    async def _start_due(self, due: list[str]) -> None:
        now = self.clock()
        for account_id in due:
            account = self._account(account_id)
            state = self.states.get(account_id)
            if account is None or state is None:
                continue
            reason, _ = blocked(state, now, self.policy, connected=account.connected)
            if reason:
                log.info("[auto-backfill] accountId=%s connect trigger skipped: %s", account_id, reason)
            elif self._running >= self.policy.max_concurrency:
                self._due[account_id] = trio.current_time() + self.settings.auto_backfill_interval_ms / 1000
            else:
                self._launch(account_id, "connect")

    def _start_queued(self) -> None:
        while self._queued and self._running < self.policy.max_concurrency:
            self._launch(self._queued.pop(0), "manual")

    def _launch(self, account_id: str, trigger: Trigger) -> None:
        assert self._nursery is not None
        self.states[account_id].running_here = True  # the slot is taken before the lock
        self._running += 1
        self._nursery.start_soon(self._run, account_id, trigger)

    async def trigger_backfill(self, account_id: str) -> TriggerOutcome:
        """``BackfillControl``: a manual run now (bypasses cooldown and backoff, never the
        lock). Waits only for the lock decision."""
        account = self._account(account_id)
        if account is None or self._nursery is None:
            return "unknown_account"
        state = await self._state(account)
        state.unavailable = not account.history_requests_available
        reason, _ = blocked(state, self.clock(), self.policy, connected=account.connected, manual=True)
        if reason == "running":
            return "running"
        if reason == "capability_unavailable":
            return "unavailable"
        if reason == "disconnected":
            return "not_connected"
        if self._running >= self.policy.max_concurrency:
            self._enqueue(account_id)
            return "queued"
        state.busy_until_ms = None  # manual: ask the lock again now
        state.running_here = True
        self._running += 1
        outcome: TriggerOutcome = await self._nursery.start(self._run, account_id, "manual")
        return outcome

    def _enqueue(self, account_id: str) -> bool:
        if account_id in self._queued:
            return False
        self._queued.append(account_id)
        self._poke()
        return True

    # -- one run -------------------------------------------------------------------------------
    async def _run(self, account_id: str, trigger: Trigger,
                   task_status: trio.TaskStatus[TriggerOutcome] = trio.TASK_STATUS_IGNORED) -> None:
        state = self.states[account_id]
        account = self._account(account_id)
        started_ms = self.clock()
        t0 = trio.current_time()
        holder = self.settings.instance_id
        notified = False
        final: AutoBackfillStatus | None = None
        counted_as: str | None = None  # on the board (/metrics): success, an error code, lock_busy

        async def work(lease: Lease) -> BackfillRun:
            nonlocal notified
            task_status.started("started")
            notified = True
            assert account is not None
            state.busy_until_ms, state.busy_holder = None, ""
            state.last_attempt_ms = started_ms
            await self._write(account_id, AccountDoc(
                last_auto_backfill_attempt_at=ms_to_datetime(started_ms),
                last_auto_backfill_status=AutoBackfillStatus(
                    running=True, started_at=ms_to_datetime(started_ms), trigger=trigger, holder=holder),
                last_backfill_status="running"))
            log.info("Backfill start accountId=%s trigger=%s holder=%s", account_id, trigger, holder)
            run = await backfill_account(account, self.runner, self.settings, self.clock)
            if self._repair_due(account_id, self.clock()):
                await self._repair(account_id)
            return run

        try:
            if account is None:
                raise LeaseBusy(None)  # the account left this instance meanwhile
            run = await run_under_lease(self.runner, "backfill", account_id, holder, work,
                                        ttl_ms=self.settings.auto_backfill_lease_ms, clock=self.clock,
                                        tag="backfill-lock", board=self.board)
            duration = int((trio.current_time() - t0) * 1000)
            result = run.result
            end_ms = self.clock()
            final = AutoBackfillStatus(running=False, ok=True, threads=result.threads, messages=result.messages,
                                       errors=result.errors, duration_ms=duration)
            state.last_at_ms = state.last_success_ms = end_ms
            state.last_failed = False
            await self._write(account_id, AccountDoc(
                last_auto_backfill_at=ms_to_datetime(end_ms), last_auto_backfill_success_at=ms_to_datetime(end_ms),
                last_auto_backfill_status=final,
                last_backfill_at=ms_to_datetime(end_ms), last_backfill_result=result,
                last_backfill_status="success", last_backfill_error="",
                last_backfill_stats=BackfillStats(threads=result.threads, messages=result.messages,
                                                  errors=result.errors, duration_ms=duration)))
            log.info("Backfill end accountId=%s threads=%d messages=%d errors=%d requests=%d dryRun=%s durationMs=%d",
                     account_id, result.threads, result.messages, result.errors, run.requests, run.dry_run, duration)
        except LeaseBusy as busy:
            counted_as = "lock_busy"  # not a run: nothing is written, only counted
            current = busy.current
            state.busy_until_ms = current.expires_at_ms if current else None
            state.busy_holder = current.owner_id if current else ""
            if not notified:
                task_status.started("running_elsewhere")
                notified = True
        except HistoryRequestUnavailable:
            state.unavailable = True
            final = await self._failed(account_id, state, started_ms, t0, UNAVAILABLE_CODE, UNAVAILABLE_MESSAGE,
                                       count_failure=False)
        except LeaseLost as exc:
            final = await self._failed(account_id, state, started_ms, t0, "lock_lost", str(exc))
        except (StoreError, TransportError) as exc:
            code = ("store_unavailable" if isinstance(exc, StoreUnavailable)
                    else "store_error" if isinstance(exc, StoreError) else "transport_error")
            final = await self._failed(account_id, state, started_ms, t0, code, str(exc)[:500])
        finally:
            if not notified:
                task_status.started("started")
            if final is not None:
                counted_as = "success" if final.ok else final.error_code or "error"
            if counted_as is not None and account is not None:
                account.status.backfill_runs = counted(account.status.backfill_runs, counted_as)
            state.running_here = False
            self._running -= 1
            self._poke()
            if final is not None and self.on_finished is not None:
                self.on_finished(account_id, final)

    async def _failed(self, account_id: str, state: BackfillState, started_ms: int, t0: float, code: str,
                      message: str, *, count_failure: bool = True) -> AutoBackfillStatus:
        duration = int((trio.current_time() - t0) * 1000)
        end_ms = self.clock()
        state.last_at_ms = end_ms
        state.last_failed = count_failure
        status = AutoBackfillStatus(running=False, ok=False, error_code=code, error_message=message,
                                    duration_ms=duration)
        log.warning("Backfill end accountId=%s threads=0 messages=0 durationMs=%d error=%s: %s",
                    account_id, duration, code, message)
        with trio.CancelScope(shield=True):
            await self._write(account_id, AccountDoc(
                last_auto_backfill_at=ms_to_datetime(end_ms), last_auto_backfill_status=status,
                last_backfill_status="error", last_backfill_error=f"{code}: {message}"[:500]))
        return status

    # -- repair ----------------------------------------------------------------------------------
    def _repair_due(self, account_id: str, now_ms: int) -> bool:
        return self.settings.auto_repair_threads_enabled and repair_due(
            self._repaired_at.get(account_id), now_ms, self.settings.auto_repair_cooldown_ms)

    async def _repair(self, account_id: str) -> None:
        now = self.clock()
        self._repaired_at[account_id] = now
        result = await repair_threads(self.runner, account_id, limit=self.settings.auto_repair_threads_limit_per_run,
                                      dry_run=self.settings.history_sync_dry_run)
        await self._write(account_id, AccountDoc(last_auto_repair_at=ms_to_datetime(now)))
        log.info("[schema-guard] accountId=%s repair checked=%d broken=%d repaired=%d",
                 account_id, result.checked, result.broken, result.repaired)

    # -- status ----------------------------------------------------------------------------------
    async def _write(self, account_id: str, patch: AccountDoc) -> None:
        try:
            await self.runner.write(account_id, self.runner.store.update_account, account_id, patch)
        except StoreError as exc:
            log.warning("[auto-backfill] accountId=%s status write failed: %s", account_id, exc)

    def _show(self) -> None:
        """The scheduler's view on the status board (/diag)."""
        now = self.clock()
        for account in self.accounts.running_accounts():
            state = self.states.get(account.account_id)
            if state is None:
                continue
            blocked_by, until = blocked(state, now, self.policy, connected=account.connected)
            reason: str = blocked_by
            due = self._due.get(account.account_id)
            if not reason and due is not None:
                reason, until = "connect_jitter", now + int((due - trio.current_time()) * 1000)
            account.status.backfill_blocked = reason
            account.status.backfill_next_eligible_ms = until if reason else now
            account.status.backfill_lock_holder = state.busy_holder if reason == "lock_busy" else (
                self.settings.instance_id if state.running_here else "")
