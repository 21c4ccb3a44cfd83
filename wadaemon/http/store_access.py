"""Blocking Store calls from the HTTP loop, each bounded by a timeout.

The Store is synchronous (``wadaemon.store.contract``). A handler must never run it on the
event loop, and must never wait for it longer than a probe can afford: a Firestore outage
can make a call hang for the gRPC deadline, and /health, /diag must still answer within a
couple of seconds (the contract: /diag "never fails when the store is down").

Why a dedicated, bounded pool rather than the loop's default executor? A call that times out
keeps its thread until the store returns. With probes arriving every few seconds during an
outage, hung calls would pile up in a shared executor and starve everything else that runs
there (the ``ActionBridge`` uses the loop's default executor). Here at most
``max_in_flight`` store calls run at once; when they are all stuck, the next call fails
immediately instead of queueing — which is the right answer for a probe anyway ("down").
The pool is shut down without waiting when the server stops, so a hung call never holds up
a stop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from wadaemon.store.contract import Store

log = logging.getLogger("wadaemon.http")

T = TypeVar("T")

DEFAULT_STORE_TIMEOUT = 2.0
DEFAULT_MAX_IN_FLIGHT = 4


class StoreCallFailed(Exception):
    """The store call raised, timed out, or could not start (all slots held by hung calls)."""


class StoreGateway:
    """Runs ``fn(store)`` in a worker thread; the awaiting handler gives up after a timeout."""

    def __init__(
        self,
        store: Store,
        *,
        timeout: float = DEFAULT_STORE_TIMEOUT,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.store = store
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._executor = ThreadPoolExecutor(max_workers=max_in_flight,
                                            thread_name_prefix="wadaemon-http-store")

    @property
    def backend(self) -> str:
        return self.store.backend

    async def call(self, fn: Callable[[Store], T], *, budget: float | None = None) -> T:
        """``fn(store)``'s result, or ``StoreCallFailed`` within ``budget`` seconds (default:
        the gateway's timeout). Must be awaited on the server's loop."""
        if budget is None:
            budget = self.timeout
        if budget <= 0:
            raise StoreCallFailed("no time left for the store call")
        if not self._slots.acquire(blocking=False):
            raise StoreCallFailed("every store slot is held by a call that has not returned")
        try:
            future: Future[T] = self._executor.submit(fn, self.store)
        except BaseException:
            self._slots.release()
            raise
        # Released when the *thread* finishes, not when we stop waiting for it.
        future.add_done_callback(lambda _: self._slots.release())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), budget)
        except TimeoutError as exc:
            raise StoreCallFailed(f"store call timed out after {budget:g}s") from exc
        except Exception as exc:
            raise StoreCallFailed(f"{type(exc).__name__}: {exc}") from exc

    async def reachable(self, *, budget: float | None = None) -> bool:
        """``store.ping()`` within ``budget`` seconds (default: the gateway's timeout); False on anything else (``ping`` should never
        raise, but a broken adapter must not break a probe)."""
        try:
            return bool(await self.call(lambda store: store.ping(), budget=budget))
        except StoreCallFailed as exc:
            log.debug("http store ping failed backend=%s: %s", self.backend, exc)
            return False

    def close(self) -> None:
        """Stop the pool without waiting for hung calls (their threads end when they return)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
