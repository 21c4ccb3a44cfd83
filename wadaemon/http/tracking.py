"""Per-request bookkeeping: the in-flight count behind a graceful stop, and one log line.

Graceful stop means "stop accepting, let the requests already running finish, then go". aiohttp's
runner waits for handlers only for a period fixed when the runner is built (and only cancels a
handler after twice that). Tracking the request tasks ourselves lets ``HttpServer.stop(timeout)``
choose the grace at stop time and cancel what is left promptly when it runs out (see
``wadaemon.http.server``).

aiohttp's access log is switched off (one INFO line per probe every few seconds is journalctl
noise); instead each request logs one DEBUG line. Only the path is logged, never the query
string: later API endpoints may carry tokens there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger("wadaemon.http")


class InFlightRequests:
    """The tasks handling requests right now. Lives on, and is used only from, the server's
    loop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return len(self._tasks)

    @contextmanager
    def track(self) -> Iterator[None]:
        task = asyncio.current_task()
        assert task is not None, "track() runs inside a request's task"
        self._tasks.add(task)
        self._idle.clear()
        try:
            yield
        finally:
            self._tasks.discard(task)
            if not self._tasks:
                self._idle.set()

    async def wait_idle(self, grace: float) -> bool:
        """True once no request is in flight; False if some still are after ``grace`` s."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(grace, 0.0))
        except TimeoutError:
            return False
        return True

    async def cancel_all(self, grace: float) -> None:
        """Cancel every request still in flight and give them ``grace`` s to unwind (aiohttp
        would only cancel them after its own, fixed, shutdown timeout twice over)."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)

    @property
    def middleware(self) -> Middleware:
        """The outermost middleware: counts the request and logs it when it ends."""

        @web.middleware
        async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            outcome = "aborted"  # cancelled, or an exception the error middleware let through
            with self.track():
                try:
                    response = await handler(request)
                    outcome = str(response.status)
                    return response
                finally:
                    log.debug("http %s %s -> %s %.1fms", request.method, request.path, outcome,
                              (time.perf_counter() - started) * 1000)

        return track_requests
