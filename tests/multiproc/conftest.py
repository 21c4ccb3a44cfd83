"""Fixtures for multi-process scenarios: ``simserver`` and ``daemons`` (see ``tests/procs.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.procs import DaemonSet, SimServer


@pytest.fixture
def simserver(tmp_path: Path) -> Iterator[Callable[..., SimServer]]:
    """A factory: ``simserver(accounts=2, chats=6, history=120, pairing_history=5, rate=0, ...)``
    starts ``wadaemon simserver`` with those options (underscores become dashes) on a free
    loopback port. Every service started is stopped at the end of the test."""
    started: list[SimServer] = []

    def start(**options: object) -> SimServer:
        args: list[str] = []
        for name, value in options.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        workdir = tmp_path / f"simserver-{len(started) + 1}"
        workdir.mkdir()
        server = SimServer(workdir, args)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.proc.cleanup()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[DaemonSet]:
    """``wadaemon run`` processes over one shared SQLite store; all cleaned up after the test."""
    daemon_set = DaemonSet(tmp_path / "daemons")
    try:
        yield daemon_set
    finally:
        daemon_set.cleanup()


@pytest.fixture(params=["sqlite", pytest.param("firestore", marks=pytest.mark.firestore)])
def daemons_any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DaemonSet]:
    """``daemons`` once over a shared SQLite file and once over the (reset) Firestore emulator."""
    if request.param == "firestore":
        emulator = request.getfixturevalue("firestore_emulator")
        emulator.ensure_running()
        emulator.reset()
        daemon_set = DaemonSet(tmp_path / "daemons", firestore=emulator)
    else:
        daemon_set = DaemonSet(tmp_path / "daemons")
    try:
        yield daemon_set
    finally:
        daemon_set.cleanup()
