"""Coalesced writes of ``accounts/{accountId}`` status fields (docs/data-model.md hot-document rule).

Actors ``post`` patches as often as they like; the writer folds them (later non-None fields
win) and writes at most once per ``min_interval_s``. A failed write keeps the folded patch and
tries again at the next interval; on shutdown the last patch is flushed, bounded in time.

Patches are *prompt* (connection state, errors, capability: what an operator acts on) or
*routine* (ingest timestamps and progress counters, which move with every commit). Routine
fields wait up to ``routine_interval_s`` for company, so a busy account costs one status
write per ten seconds instead of one per second (with 50 busy accounts that was a quarter of
a write per stored message); a prompt patch takes whatever routine fields are pending along.
/diag reads the in-memory status, which is never stale.
"""

from __future__ import annotations

import logging

import msgspec
import trio

from wadaemon.domain import AccountDoc
from wadaemon.store.runner import StoreRunner

log = logging.getLogger("wadaemon.status")

FINAL_FLUSH_TIMEOUT_S = 10.0
ROUTINE_INTERVAL_S = 10.0


def fold_patch(base: AccountDoc | None, patch: AccountDoc) -> AccountDoc:
    """``patch``'s non-None fields over ``base``."""
    if base is None:
        return patch
    changes = {f: v for f in patch.__struct_fields__ if (v := getattr(patch, f)) is not None}
    return msgspec.structs.replace(base, **changes)


class AccountStatusWriter:
    def __init__(self, account_id: str, runner: StoreRunner, *, min_interval_s: float = 1.0,
                 routine_interval_s: float = ROUTINE_INTERVAL_S) -> None:
        self.account_id = account_id
        self._runner = runner
        self._min_interval_s = min_interval_s
        self._routine_interval_s = routine_interval_s
        self._pending: AccountDoc | None = None
        self._wakeup = trio.Event()
        self._prompt = trio.Event()
        self.writes = 0

    def post(self, patch: AccountDoc, *, routine: bool = False) -> None:
        """Queue a patch; never blocks, never fails."""
        self._pending = fold_patch(self._pending, patch)
        self._wakeup.set()
        if not routine:
            self._prompt.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                with trio.move_on_after(self._routine_interval_s):
                    await self._prompt.wait()  # routine fields alone wait for company
                self._wakeup, self._prompt = trio.Event(), trio.Event()
                await self._flush()
                await trio.sleep(self._min_interval_s)  # the rate limit itself, not synchronisation
        finally:
            with trio.move_on_after(FINAL_FLUSH_TIMEOUT_S) as scope:
                scope.shield = True
                await self._flush()

    async def _flush(self) -> None:
        patch, self._pending = self._pending, None
        if patch is None:
            return
        try:
            await self._runner.write(self.account_id, self._runner.store.update_account, self.account_id, patch)
            self.writes += 1
        except BaseException as exc:
            # Keep the patch whatever happened: a store error is retried at the next interval; a
            # cancellation (e.g. while waiting for the account's lane at shutdown) leaves it for
            # the final flush.
            self._pending = fold_patch(patch, self._pending) if self._pending else patch
            self._wakeup.set()
            self._prompt.set()
            if not isinstance(exc, Exception):
                raise
            log.warning("[status] accountId=%s status write failed: %s", self.account_id, exc)
