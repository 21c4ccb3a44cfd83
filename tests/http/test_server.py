"""HttpServer lifecycle: bind errors, restart, graceful stop; serve_http under trio."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import pytest
import trio
from aiohttp import web

from tests.http.fakes import FakeStore, Reply, fetch
from wadaemon.http.server import _CANCEL_GRACE, HttpServer, serve_http
from wadaemon.status import DaemonStatus


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def refuses_connections(port: int) -> bool:
    """True when nothing accepts on ``port``. A reset means the listener closed during our
    handshake; a timed-out connect (a SYN dropped in that same race) proves nothing."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    except TimeoutError:
        return False
    return False


def wait_until_refused(port: int, limit_s: float = 5.0) -> bool:
    """Poll until the listener is gone (bounded): each attempt is a real connect."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if refuses_connections(port):
            return True
    return False


def test_port_zero_reports_the_bound_port(board: DaemonStatus, fake_store: FakeStore) -> None:
    server = HttpServer("127.0.0.1", 0, board, fake_store.as_store())
    port = server.start()
    try:
        assert port == server.port > 0
        assert server.running
        assert fetch(port, "/ready").status == 503
    finally:
        assert server.stop(2.0)
    assert not server.running
    assert refuses_connections(port)


def test_start_raises_when_the_port_is_taken(board: DaemonStatus, fake_store: FakeStore) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = HttpServer("127.0.0.1", taken.getsockname()[1], board, fake_store.as_store())

        with pytest.raises(OSError):
            server.start()

    assert not server.running
    with pytest.raises(RuntimeError):
        _ = server.port
    assert server.stop(1.0)  # nothing to stop


def test_start_twice_is_refused_and_restart_after_stop_works(
    board: DaemonStatus, fake_store: FakeStore
) -> None:
    server = HttpServer("127.0.0.1", 0, board, fake_store.as_store())
    server.start()
    try:
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        assert server.stop(2.0)

    second = server.start()
    try:
        assert fetch(second, "/health").status == 200
    finally:
        assert server.stop(2.0)


def test_stop_closes_the_listener_and_finishes_in_flight_requests(
    board: DaemonStatus, pool: ThreadPoolExecutor
) -> None:
    store = FakeStore()
    store.hang_ping = True
    server = HttpServer("127.0.0.1", 0, board, store.as_store(), store_timeout=10.0)
    port = server.start()
    try:
        in_flight: Future[Reply] = pool.submit(fetch, port, "/health", timeout=10.0)
        assert store.entered.wait(5.0)  # the request is inside its handler
        stopping: Future[bool] = pool.submit(server.stop, 10.0)

        assert wait_until_refused(port)  # no new connections ...
        # ... while stop keeps waiting for the request, longer than the cancel grace that
        # would cut it off if stop did not wait for in-flight requests itself.
        both: list[Future[Any]] = [in_flight, stopping]
        pending = wait(both, timeout=_CANCEL_GRACE * 2).not_done
        assert pending == {in_flight, stopping}
        store.release.set()

        assert in_flight.result(5.0).json["status"] == "ok"  # it finished, not cut off
        assert stopping.result(5.0) is True
    finally:
        store.release.set()
        server.stop(1.0)


def test_stop_cancels_requests_still_running_after_the_grace(
    board: DaemonStatus, fake_store: FakeStore, pool: ThreadPoolExecutor
) -> None:
    entered, cancelled = threading.Event(), threading.Event()
    routes = web.RouteTableDef()

    @routes.get("/test/forever")
    async def forever(request: web.Request) -> web.Response:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    server = HttpServer("127.0.0.1", 0, board, fake_store.as_store(), extra_routes=routes)
    port = server.start()
    in_flight: Future[Reply] = pool.submit(fetch, port, "/test/forever", timeout=10.0)
    assert entered.wait(5.0)

    started = time.monotonic()
    assert server.stop(0.1) is True

    # Cancelled once the 0.1 s grace is over, not after aiohttp's fallback (2 x its timeout).
    assert time.monotonic() - started < 0.1 + _CANCEL_GRACE
    assert cancelled.is_set()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        in_flight.result(5.0)


async def test_serve_http_answers_while_trio_is_blocked_and_stops_on_cancel(
    board: DaemonStatus, fake_store: FakeStore
) -> None:
    server = HttpServer("127.0.0.1", 0, board, fake_store.as_store())
    board.set_mode("active")
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_http, server)
        port = server.port
        # Deliberately block the trio thread: the HTTP thread must not need it to answer.
        reply = fetch(port, "/ready")
        assert reply.status == 200
        nursery.cancel_scope.cancel()

    assert not server.running
    assert refuses_connections(port)


async def test_serve_http_stops_the_server_when_cancelled_during_shutdown_of_parent(
    board: DaemonStatus, fake_store: FakeStore
) -> None:
    """Cancellation reaching serve_http from outside (a supervisor's scope) still releases
    the port before serve_http returns."""
    server = HttpServer("127.0.0.1", 0, board, fake_store.as_store())
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_http, server)
            port = server.port
            scope.cancel()
    assert scope.cancelled_caught
    assert refuses_connections(port)


async def test_serve_http_raises_when_the_server_thread_ends_on_its_own(
    board: DaemonStatus, fake_store: FakeStore
) -> None:
    server = HttpServer("127.0.0.1", 0, board, fake_store.as_store())
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="ended unexpectedly")):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_http, server)
            # Stopping behind serve_http's back stands in for the thread dying.
            await trio.to_thread.run_sync(server.stop, 1.0)


def test_server_thread_is_a_daemon_thread(board: DaemonStatus, fake_store: FakeStore) -> None:
    server = HttpServer("127.0.0.1", 0, board, fake_store.as_store())
    server.start()
    try:
        [thread] = [t for t in threading.enumerate() if t.name == "wadaemon-http"]
        assert thread.daemon
    finally:
        server.stop(1.0)
