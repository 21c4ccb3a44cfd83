"""GET /health and GET /ready against a real server on loopback."""

from __future__ import annotations

import time

import pytest

from tests.http.conftest import Serve
from tests.http.fakes import FakeStore, fetch
from wadaemon.status import DaemonStatus, Mode
from wadaemon.store.contract import StoreUnavailable


def test_health_ok_reports_store_and_uptime(serve: Serve, board: DaemonStatus) -> None:
    server = serve(clock=lambda: board.started_at_ms / 1000 + 65.9)

    reply = fetch(server.port, "/health")

    assert reply.status == 200
    assert reply.headers.get_content_type() == "application/json"
    assert reply.json == {"status": "ok", "store": {"status": "ok", "backend": "fake"},
                          "uptimeS": 65, "reasons": []}


@pytest.mark.parametrize("failure", [False, StoreUnavailable("emulator gone")],
                         ids=["ping-false", "ping-raises"])
def test_health_degraded_when_store_ping_fails(
    serve: Serve, fake_store: FakeStore, failure: bool | BaseException
) -> None:
    fake_store.ping_result = failure
    server = serve()

    reply = fetch(server.port, "/health")

    assert reply.status == 200
    assert reply.json["status"] == "degraded"
    assert reply.json["store"] == {"status": "down", "backend": "fake"}


def test_health_degraded_within_timeout_when_store_hangs(
    serve: Serve, fake_store: FakeStore
) -> None:
    fake_store.hang_ping = True
    server = serve(store_timeout=0.2)

    started = time.monotonic()
    reply = fetch(server.port, "/health", timeout=5.0)

    assert time.monotonic() - started < 2.0
    assert reply.status == 200
    assert reply.json["store"]["status"] == "down"


def test_hung_store_calls_do_not_pile_up(serve: Serve, fake_store: FakeStore) -> None:
    """With every store slot held by a hung call, the next probe fails at once: it neither
    queues another call behind the hung one nor waits out the store timeout."""
    fake_store.hang_ping = True
    server = serve(store_timeout=1.0, store_max_in_flight=1)

    first = fetch(server.port, "/health")
    assert fake_store.entered.is_set()
    started = time.monotonic()
    second = fetch(server.port, "/health")

    assert time.monotonic() - started < 0.5  # well under the 1 s store timeout
    assert first.json["status"] == second.json["status"] == "degraded"
    assert fake_store.calls == ["ping"]  # the second probe never reached the store


@pytest.mark.parametrize(("mode", "status"), [("starting", 503), ("stopping", 503),
                                              ("active", 200), ("passive", 200)])
def test_ready_follows_the_board_mode(
    serve: Serve, board: DaemonStatus, mode: Mode, status: int
) -> None:
    server = serve()
    board.set_mode(mode)

    reply = fetch(server.port, "/ready")

    assert reply.status == status
    assert reply.json == {"ready": status == 200, "mode": mode, "instanceId": "inst-1"}


def test_ready_needs_no_store(serve: Serve, board: DaemonStatus, fake_store: FakeStore) -> None:
    fake_store.hang_ping = True
    board.set_mode("active")
    server = serve(store_timeout=30.0)

    assert fetch(server.port, "/ready", timeout=2.0).status == 200
    assert fake_store.calls == []

