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

Reads the store can answer at once. A store that offers ``local_reader()`` (the embedded
SQLite store: reads from local pages that never wait for a lock) is read on the loop itself
when the gateway is given that reader: on a 2-core machine with 50 clients that is 2.5 times
the pages per second of the hop to a worker thread (``python -m bench http``), because handing
the GIL between threads costs more than the read. A read that would wait raises at once and
takes the worker-thread way with its timeout. A read that is *slow* (a disk in trouble) turns
inline reads off for ``INLINE_PAUSE_S``, so one slow disk cannot keep the probes waiting
behind the API on the loop.

Two gateways serve the HTTP thread. The probes' (``queue=False``) fails at once when every
slot is held. The API's (``queue=True``, more slots) lets a call *wait* for a slot within its
budget: under load (50 clients reading pages) slots are busy, not hung, and a request should
take its turn rather than get a 503; when slots are hung, the wait ends with the budget and
the answer is still a prompt 503. Keeping them apart means API load never makes a probe
report the store "down".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar, runtime_checkable

from wadaemon.store.contract import Store, StoreUnavailable

log = logging.getLogger("wadaemon.http")

T = TypeVar("T")

DEFAULT_STORE_TIMEOUT = 2.0
DEFAULT_MAX_IN_FLIGHT = 4
#: Slots of the API's gateway (reads of pages, accounts, status).
API_MAX_IN_FLIGHT = 8
#: An inline read slower than this pauses inline reads for ``INLINE_PAUSE_S``.
INLINE_SLOW_S = 0.05
INLINE_PAUSE_S = 30.0


@runtime_checkable
class Marked(Protocol):
    """A reader that can tell whether a page read earlier may be reused (``page_cache``)."""

    def marks(self, thread_id: str | None = None) -> tuple[int, ...] | None: ...


def local_reader_of(store: Store) -> Store | None:
    """The store's reader that never waits, when its *class* offers one (a wrapper that
    forwards attributes to a real store, as fault-injecting test stores do, offers none)."""
    method = getattr(type(store), "local_reader", None)
    return method(store) if callable(method) else None


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
        queue: bool = False,
        reader: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.reader = reader
        self._clock = clock
        self._inline_paused_until = 0.0
        self.timeout = timeout
        self._max_in_flight = max_in_flight
        self._queue = queue
        self._turns: asyncio.Semaphore | None = None  # queue=True: created on the server's loop
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
        if self.reader is not None and self._clock() >= self._inline_paused_until:
            began = self._clock()
            try:
                return fn(self.reader)
            except StoreUnavailable as exc:  # it would have waited: the worker-thread way
                log.debug("http inline read gave way backend=%s: %s", self.backend, exc)
            except Exception as exc:
                raise StoreCallFailed(f"{type(exc).__name__}: {exc}") from exc
            finally:
                took = self._clock() - began
                if took > INLINE_SLOW_S:
                    self._inline_paused_until = self._clock() + INLINE_PAUSE_S
                    log.warning("http inline store read took %.0fms: reading in worker threads for %.0fs",
                                took * 1000, INLINE_PAUSE_S)
        loop = asyncio.get_running_loop()
        release_turn: Callable[[], None] = lambda: None  # noqa: E731
        if self._queue:
            if self._turns is None:
                self._turns = asyncio.Semaphore(self._max_in_flight)
            turns = self._turns
            began = loop.time()
            try:
                await asyncio.wait_for(turns.acquire(), budget)
            except TimeoutError as exc:
                raise StoreCallFailed(f"no store slot came free within {budget:g}s") from exc
            budget -= loop.time() - began

            def release_turn() -> None:
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                    loop.call_soon_threadsafe(turns.release)

            if budget <= 0:
                release_turn()
                raise StoreCallFailed("no time left for the store call")
        if not self._slots.acquire(blocking=False):
            release_turn()
            raise StoreCallFailed("every store slot is held by a call that has not returned")
        try:
            future: Future[T] = self._executor.submit(fn, self.store)
        except BaseException:
            self._slots.release()
            release_turn()
            raise

        def finished(_: Future[T]) -> None:
            # Released when the *thread* finishes, not when we stop waiting for it.
            self._slots.release()
            release_turn()

        future.add_done_callback(finished)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), budget)
        except TimeoutError as exc:
            raise StoreCallFailed(f"store call timed out after {budget:g}s") from exc
        except Exception as exc:
            raise StoreCallFailed(f"{type(exc).__name__}: {exc}") from exc

    def marks(self, thread_id: str | None = None) -> tuple[int, ...] | None:
        """The reader's marks for a page (``wadaemon.http.page_cache``); None when there is no
        reader that gives them, or while inline reads are paused."""
        reader = self.reader
        if not isinstance(reader, Marked) or self._clock() < self._inline_paused_until:
            return None
        return reader.marks(thread_id)

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
