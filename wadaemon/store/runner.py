"""How trio code reaches the (blocking) store.

Every call runs in a worker thread, bounded by one ``CapacityLimiter`` so that a slow backend
cannot exhaust threads. Calls are *not* abandoned on cancellation: a commit that started
finishes (or fails) before the caller sees ``Cancelled``, so a cancelled writer never leaves
the journal believing something that did not happen.

Per account, writers share one *lane* (a ``trio.Lock``): the store contract lets adapters do
read-modify-write without transactions because writes for one account are serialised here.
Reads do not take the lane.

Each write reports its duration and outcome to ``on_write`` (the metrics' commit-latency
histogram), measured inside the worker thread around the store call alone, so lane and
thread-pool waits do not count as store latency. It is one callback per commit, not per
message: nothing on the hot path grows with batch size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import trio

from wadaemon.store.contract import Store

T = TypeVar("T")


#: ``(operation, seconds, error or None)`` for every store write.
WriteObserver = Callable[[str, float, BaseException | None], None]


class StoreRunner:
    def __init__(self, store: Store, *, max_threads: int = 8, on_write: WriteObserver | None = None) -> None:
        self.store = store
        self._limiter = trio.CapacityLimiter(max_threads)
        self._lanes: dict[str, trio.Lock] = {}
        self._on_write = on_write

    def lane(self, account_id: str) -> trio.Lock:
        lock = self._lanes.get(account_id)
        if lock is None:
            lock = self._lanes[account_id] = trio.Lock()
        return lock

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a read-only store method in a worker thread."""
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)

    async def atomic(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an operation the store makes atomic by itself (lease compare-and-swap) without
        the lane: a lease renewal must never wait behind a long history commit."""
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)

    async def write(self, account_id: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store write for ``account_id`` in its lane."""
        call = partial(fn, *args, **kwargs)
        observe = self._on_write
        if observe is not None:
            call = partial(_timed, observe, getattr(fn, "__name__", "write"), call)
        async with self.lane(account_id):
            return await trio.to_thread.run_sync(call, limiter=self._limiter)


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
