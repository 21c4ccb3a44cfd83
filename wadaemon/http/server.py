"""``HttpServer``: aiohttp on a dedicated thread with its own asyncio loop; ``serve_http``:
the trio child that runs it.

Why a thread, and not aiohttp inside trio? The daemon runs on trio; aiohttp runs only on
asyncio. Bridging the two loops in one thread (trio-asyncio) is fragile and would tie the
probes to the trio scheduler: a busy or stuck trio loop would stall /health and /ready, which
exist precisely to report such trouble. So aiohttp gets its own event loop on its own (daemon)
thread, and handlers never touch trio state directly:

* the status board is read through ``DaemonStatus.snapshot()``, a lock-protected copy;
* the blocking Store is called in worker threads with a timeout
  (``wadaemon.http.store_access``), so a store outage cannot stall a probe either;
* actions inside the daemon (later: start a backfill, send a message) go through
  ``ActionBridge`` (``trio.from_thread.run`` with the daemon's ``TrioToken``).

Lifecycle. ``start()`` spawns the thread and returns the bound port once the socket listens
(port 0 binds an ephemeral port — tests use it); a bind error (port taken) is raised from
``start()``. ``stop(timeout)`` is graceful: the listening socket closes first, requests in
flight get up to ``timeout`` seconds to finish, then whatever still runs is cancelled, idle
keep-alive connections are closed and the thread is joined. A server can be started again
after a stop (the supervisor restarts the ``http`` child with the same ``HttpServer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable

import trio
from aiohttp import web

from wadaemon.config import Settings
from wadaemon.http.app import build_app
from wadaemon.http.auth import AuthConfig
from wadaemon.http.bridge import ActionBridge
from wadaemon.http.context import HttpContext
from wadaemon.http.control import DaemonControl
from wadaemon.http.protocol import protocol_factory, quiet_accept_floods
from wadaemon.http.ratelimit import RateLimiter
from wadaemon.http.store_access import (
    API_MAX_IN_FLIGHT,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_STORE_TIMEOUT,
    StoreGateway,
    local_reader_of,
)
from wadaemon.http.tracking import InFlightRequests
from wadaemon.metrics import Metrics
from wadaemon.status import DaemonStatus
from wadaemon.store.contract import Store

log = logging.getLogger("wadaemon.http")

DEFAULT_STOP_TIMEOUT = 5.0
#: After the grace period, how long cancelled handlers get to unwind. Also aiohttp's own
#: shutdown timeout, which only matters if a handler ignores its cancellation.
_CANCEL_GRACE = 0.5
#: How much longer than the grace ``stop`` waits for the thread before giving up on it.
_JOIN_MARGIN = 2.0


class _Run:
    """One start→stop cycle: the thread, its loop and the hand-over points between them."""

    def __init__(self) -> None:
        self.ready = threading.Event()  # listening, or failed before listening
        self.done = threading.Event()  # the thread has finished
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_requested: asyncio.Future[float] | None = None  # result: the grace (s)
        self.error: BaseException | None = None
        self.port = 0
        self.thread: threading.Thread | None = None


class HttpServer:
    """The daemon's HTTP endpoints, served from their own thread. See the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        status: DaemonStatus,
        store: Store,
        bridge: ActionBridge | None = None,
        *,
        store_timeout: float = DEFAULT_STORE_TIMEOUT,
        store_max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        extra_routes: Iterable[web.AbstractRouteDef] = (),
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        settings: Settings | None = None,
        control: DaemonControl | None = None,
        auth: AuthConfig | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.status = status
        self.store = store
        self.bridge = bridge
        self.store_timeout = store_timeout
        self.store_max_in_flight = store_max_in_flight
        self.extra_routes = list(extra_routes)
        self.clock = clock
        self.metrics = metrics if metrics is not None else Metrics(status, clock=clock)
        self.settings = settings if settings is not None else Settings(instance_id=status.instance_id)
        self.control = control
        self.auth = auth or AuthConfig(api_token=self.settings.api_token,
                                       admin_token=self.settings.admin_token)
        self.limiter = limiter or RateLimiter()
        self._lock = threading.Lock()
        self._run: _Run | None = None

    @property
    def port(self) -> int:
        """The bound port while running (the real one when started with port 0)."""
        run = self._run
        if run is None or not run.ready.is_set() or run.error is not None:
            raise RuntimeError("the HTTP server is not running")
        return run.port

    @property
    def running(self) -> bool:
        run = self._run
        return run is not None and run.ready.is_set() and not run.done.is_set()

    def start(self) -> int:
        """Serve from a new thread; return the bound port once listening. Raises the bind
        error (``OSError``, e.g. port taken) if it cannot listen."""
        with self._lock:
            if self._run is not None and not self._run.done.is_set():
                raise RuntimeError("the HTTP server is already running")
            run = _Run()
            run.thread = threading.Thread(target=self._thread_main, args=(run,),
                                          name="wadaemon-http", daemon=True)
            run.thread.start()
            run.ready.wait()
            if run.error is not None:
                run.thread.join()
                raise run.error
            self._run = run
        log.info("http listening host=%s port=%d", self.host, run.port)
        return run.port

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
        """Stop gracefully (see the module docstring); a no-op when not running. Returns False
        if the thread did not end in time (it is a daemon thread: it cannot block exit)."""
        with self._lock:
            run, self._run = self._run, None
            if run is None or run.thread is None:
                return True
            loop, stop_requested = run.loop, run.stop_requested
            if loop is not None and stop_requested is not None:

                def request_stop() -> None:
                    if not stop_requested.done():
                        stop_requested.set_result(max(timeout, 0.0))

                # RuntimeError: the loop is already closed, the thread has ended on its own.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(request_stop)
            run.thread.join(max(timeout, 0.0) + _JOIN_MARGIN)
            if run.thread.is_alive():
                log.error("http server thread did not stop within %.1fs", timeout + _JOIN_MARGIN)
                return False
        log.info("http stopped")
        return True

    def wait_stopped(self) -> BaseException | None:
        """Block until the current run's thread ends; its fatal error, if it had one. Returns
        at once when not running."""
        run = self._run
        if run is None:
            return None
        run.done.wait()
        return run.error

    # -- the server thread -------------------------------------------------------------------
    def _thread_main(self, run: _Run) -> None:
        loop = asyncio.new_event_loop()
        run.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(run))
        except BaseException as exc:
            run.error = exc
            if run.ready.is_set():
                log.exception("http server thread failed")
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                run.ready.set()
                run.done.set()

    async def _serve(self, run: _Run) -> None:
        loop = asyncio.get_running_loop()
        gateway = StoreGateway(self.store, timeout=self.store_timeout,
                               max_in_flight=self.store_max_in_flight)
        api_gateway = StoreGateway(self.store, timeout=self.store_timeout,
                                   max_in_flight=API_MAX_IN_FLIGHT, queue=True,
                                   reader=local_reader_of(self.store))
        in_flight = InFlightRequests()
        context = HttpContext(status=self.status, store=gateway, api_store=api_gateway, bridge=self.bridge,
                              clock=self.clock, metrics=self.metrics, settings=self.settings,
                              control=self.control, auth=self.auth, limiter=self.limiter)
        app = build_app(context, in_flight, self.extra_routes)
        # access_log=None: no aiohttp access log at all (the tracking middleware logs at debug).
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_CANCEL_GRACE)
        try:
            await runner.setup()
            # Our own listener over aiohttp's server: connection rules of wadaemon.http.protocol.
            quiet_accept_floods()
            site = await loop.create_server(protocol_factory(runner), self.host, self.requested_port,
                                            reuse_address=True, backlog=128)
            run.port = int(site.sockets[0].getsockname()[1])
            stop_requested: asyncio.Future[float] = loop.create_future()
            run.stop_requested = stop_requested
            run.ready.set()

            grace = await stop_requested
            site.close()  # stop accepting new connections
            if not await in_flight.wait_idle(grace):
                log.warning("http stop: %d request(s) still running after %.1fs: cancelling",
                            in_flight.count, grace)
                await in_flight.cancel_all(_CANCEL_GRACE)
        finally:
            await runner.cleanup()  # closes the (now idle) connections
            gateway.close()
            api_gateway.close()


async def serve_http(
    server: HttpServer,
    *,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``server`` as a trio child: started once it listens, stopped when cancelled.

    The bind happens in a worker thread (``start`` blocks until listening). Cancellation is the
    normal way out: the stop runs in a ``finally`` under a shield — bounded by ``stop_timeout``
    plus a small margin, so shielding cannot hang shutdown — and the supervisor only sees this
    child end once the port is released. If the server thread dies on its own, this raises,
    and the supervisor restarts the child.
    """
    try:
        await trio.to_thread.run_sync(server.start)
        task_status.started()
        error = await trio.to_thread.run_sync(server.wait_stopped, abandon_on_cancel=True)
        raise RuntimeError("the HTTP server thread ended unexpectedly") from error
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.stop, stop_timeout)
