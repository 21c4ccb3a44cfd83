from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.http.fakes import FakeStore
from wadaemon.http.server import HttpServer
from wadaemon.status import DaemonStatus

#: A fixed "now" for the injected clock: 2024-01-02T03:04:05Z.
NOW_S = 1_704_164_645.0

Serve = Callable[..., HttpServer]


@pytest.fixture
def board() -> DaemonStatus:
    return DaemonStatus("inst-1")


@pytest.fixture
def fake_store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def serve(board: DaemonStatus, fake_store: FakeStore) -> Iterator[Serve]:
    """Start an ``HttpServer`` on 127.0.0.1, port 0; stopped (and fake stores released) after
    the test. Defaults: the ``board`` and ``fake_store`` fixtures, a 0.2 s store timeout."""
    servers: list[HttpServer] = []

    def start(**overrides: Any) -> HttpServer:
        options: dict[str, Any] = {"status": board, "store": fake_store, "store_timeout": 0.2}
        options.update(overrides)
        server = HttpServer("127.0.0.1", 0, **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        release = getattr(server.store, "release", None)
        if release is not None:
            release.set()
        assert server.stop(5.0)
