"""How trio code reaches the (blocking) store.

Every call runs in a worker thread, bounded by one ``CapacityLimiter`` so that a slow backend
cannot exhaust threads. Calls are *not* abandoned on cancellation: a commit that started
finishes (or fails) before the caller sees ``Cancelled``, so a cancelled writer never leaves
the journal believing something that did not happen.

The one exception is the end of shutdown (``abandon``): a frozen store would otherwise hold
the process for as long as its RPC deadlines allow (30 s and more, past systemd's stop
timeout). Abandoning is safe because the caller then raises instead of returning, so nothing
is marked done in the journal: whatever the abandoned thread eventually does or does not
commit is replayed — idempotently — at the next start.

Per account, writers share one *lane* (a ``trio.Lock``): the store contract lets adapters do
read-modify-write without transactions because writes for one account are serialised here.
Reads do not take the lane.

Each write reports its duration and outcome to ``on_write`` (the metrics' commit-latency
histogram), measured inside the worker thread around the store call alone, so lane and
thread-pool waits do not count as store latency. It is one callback per commit, not per
message: nothing on the hot path grows with batch size.

**Fencing.** An account run under an ownership lease registers its fence
(``wadaemon.cluster.fence``); every write for that account checks it inside the lane, right
before the store call, and raises ``LeaseLost`` once the lease may be someone else's. That
includes the shielded final flushes writers do when cancelled, which a cancel scope cannot stop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, TypeVar

import trio

from wadaemon.store.contract import Store, StoreError, StoreUnavailable

T = TypeVar("T")


class Fenced(Protocol):
    def valid(self) -> bool: ...


class LeaseLost(StoreError):
    """A write for an account whose ownership lease this instance may no longer hold: refused,
    nothing was written (the journal keeps the work)."""


#: ``(operation, seconds, error or None)`` for every store write.
WriteObserver = Callable[[str, float, BaseException | None], None]


class StoreRunner:
    def __init__(self, store: Store, *, max_threads: int = 8, on_write: WriteObserver | None = None) -> None:
        self.store = store
        self._limiter = trio.CapacityLimiter(max_threads)
        # The thread itself is not limited again: the caller already holds a ``_limiter`` token.
        self._unlimited = trio.CapacityLimiter(math.inf)
        self._lanes: dict[str, trio.Lock] = {}
        self._on_write = on_write
        self._fences: dict[str, Fenced] = {}
        self._in_flight: set[trio.CancelScope] = set()
        self._abandoned = False

    def fence(self, account_id: str, fence: Fenced) -> None:
        """From now on, writes for ``account_id`` go through only while ``fence.valid()``."""
        self._fences[account_id] = fence

    def check_fence(self, account_id: str) -> None:
        """Raise ``LeaseLost`` unless this instance may still act for ``account_id`` (writes,
        and sends through its socket, check this first)."""
        fence = self._fences.get(account_id)
        if fence is not None and not fence.valid():
            raise LeaseLost(f"account {account_id!r}: ownership lease lost, refused")

    def lane(self, account_id: str) -> trio.Lock:
        lock = self._lanes.get(account_id)
        if lock is None:
            lock = self._lanes[account_id] = trio.Lock()
        return lock

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a read-only store method in a worker thread."""
        return await self._call(partial(fn, *args, **kwargs))

    async def atomic(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an operation the store makes atomic by itself (lease compare-and-swap) without
        the lane: a lease renewal must never wait behind a long history commit."""
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)

    async def write(self, account_id: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store write for ``account_id`` in its lane (refused once its fence fails)."""
        call = partial(fn, *args, **kwargs)
        observe = self._on_write
        if observe is not None:
            call = partial(_timed, observe, getattr(fn, "__name__", "write"), call)
        async with self.lane(account_id):
            return await self._call(call, fenced=account_id)

    def abandon(self) -> int:
        """Shutdown only: give up on every call in flight (its caller gets ``StoreUnavailable``)
        and refuse new ones at once. Returns how many calls were in flight."""
        self._abandoned = True
        for scope in self._in_flight:
            scope.cancel()
        return len(self._in_flight)

    async def _call(self, call: Callable[[], T], *, fenced: str | None = None) -> T:
        async with self._limiter:  # waiting for a thread is cancellable as usual
            if self._abandoned:
                raise StoreUnavailable("the daemon is stopping: store calls are abandoned")
            if fenced is not None:  # right before the call: the wait for a thread may be long
                self.check_fence(fenced)
            # Shielded: the caller's cancellation waits for the call; only ``abandon`` ends it.
            with trio.CancelScope(shield=True) as scope:
                self._in_flight.add(scope)
                try:
                    return await trio.to_thread.run_sync(call, abandon_on_cancel=True,
                                                         limiter=self._unlimited)
                finally:
                    self._in_flight.discard(scope)
        raise StoreUnavailable("the daemon is stopping: the store did not answer in time")


def _timed(observe: WriteObserver, operation: str, call: Callable[[], T]) -> T:
    started = time.perf_counter()
    error: BaseException | None = None
    try:
        return call()
    except BaseException as exc:
        error = exc
        raise
    finally:
        observe(operation, time.perf_counter() - started, error)
