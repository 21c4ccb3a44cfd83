"""Per-request bookkeeping: the in-flight count behind a graceful stop, and one log line.

Graceful stop means "stop accepting, let the requests already running finish, then go". aiohttp's
runner can wait for handlers, but only for a grace period fixed when the runner is built;
counting in-flight requests ourselves lets ``HttpServer.stop(timeout)`` choose the grace at
stop time (see ``wadaemon.http.server``).

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

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger("wadaemon.http")


class InFlightRequests:
    """Counts requests being handled. Lives on, and is used only from, the server's loop."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    @contextmanager
    def track(self) -> Iterator[None]:
        self._count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    async def wait_idle(self, grace: float) -> bool:
        """True once no request is in flight; False if some still are after ``grace`` s."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(grace, 0.0))
        except TimeoutError:
            return False
        return True

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
