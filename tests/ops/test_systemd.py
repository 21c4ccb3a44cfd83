"""sd_notify against a real unix datagram socket standing in for systemd, with a real daemon
process: READY once /ready answers, WATCHDOG from the trio loop (a blocked loop stops the
pings while the HTTP thread still answers), STATUS, STOPPING; journald priority prefixes on
every line and no message text in them."""

from __future__ import annotations

import itertools
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.demo_process import demo_process
from wadaemon.domain import thread_id_for
from wadaemon.store.sqlite import SqliteStore
from wadaemon.systemd import Notifier

WATCHDOG_USEC = 400_000  # pings every 0.2 s
BLOCK_S = 3.0


class FakeSystemd:
    """A bound SOCK_DGRAM socket at a short path (sun_path is limited to 108 bytes)."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="wad-notify-", dir="/tmp")
        self.path = str(Path(self.dir.name) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.received: list[tuple[float, dict[str, str]]] = []

    def receive(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        self.received.append((time.monotonic(), fields))
        return fields

    def wait_for(self, key: str, deadline_s: float) -> dict[str, str]:
        end = time.monotonic() + deadline_s
        while (left := end - time.monotonic()) > 0:
            fields = self.receive(left)
            if fields is not None and key in fields:
                return fields
        raise AssertionError(f"no {key} within {deadline_s}s; got {self.received[-5:]}")

    def drain(self) -> list[dict[str, str]]:
        drained = []
        while (fields := self.receive(0.001)) is not None:
            drained.append(fields)
        return drained

    def close(self) -> None:
        self.sock.close()
        self.dir.cleanup()


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    fake = FakeSystemd()
    yield fake
    fake.close()


def test_notifier_is_a_noop_without_notify_socket() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert notifier.send(ready="1") is False
    assert Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000",
                                  "WATCHDOG_PID": "1"}).watchdog_interval_s is None


def test_abstract_socket_address(systemd: FakeSystemd) -> None:
    name = f"@wadaemon-test-{time.monotonic_ns()}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind("\0" + name[1:])
    abstract.settimeout(5)
    notifier = Notifier(name)
    try:
        assert notifier.send(status="hello", ready="1")
        assert abstract.recv(100) == b"STATUS=hello\nREADY=1"
    finally:
        notifier.close()
        abstract.close()


@pytest.mark.slow
def test_daemon_speaks_sd_notify_and_a_blocked_loop_stops_the_watchdog(
        tmp_path: Path, systemd: FakeSystemd) -> None:
    env = {"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": str(WATCHDOG_USEC),
           "JOURNAL_STREAM": "8:12345", "BLOCK_S": str(BLOCK_S)}
    with demo_process(tmp_path, "--accounts", "2", "--messages", "400", env=env) as daemon:
        ready = systemd.wait_for("READY", 90)
        assert ready["READY"] == "1"
        # READY promised the probes answer: they do, at once.
        assert daemon.get("/ready")[0] == 200

        # Watchdog pings keep coming at about half WATCHDOG_USEC.
        first = len(systemd.received)
        for _ in range(5):
            systemd.wait_for("WATCHDOG", 2)
        pings = [t for t, f in systemd.received[first:] if "WATCHDOG" in f]
        assert max(b - a for a, b in itertools.pairwise(pings)) < 2.0

        # STATUS summarises accounts and backlog; it converges to both accounts connected.
        def status_says_connected() -> bool:
            systemd.receive(0.3)
            return any(re.fullmatch(r"active: 2/2 accounts connected, backlog \d+", f.get("STATUS", ""))
                       for _, f in systemd.received)
        daemon.wait_until("STATUS with 2/2 connected", status_says_connected)

        # Block the trio loop: pings stop, while the HTTP thread still answers /health.
        daemon.process.send_signal(10)  # SIGUSR1
        daemon.wait_until("the loop to block", lambda: daemon.marks.exists()
                          and "blocked" in daemon.marks.read_text())
        systemd.drain()  # pings sent before the block began
        blocked_at = float(daemon.marks.read_text().split()[1])  # wall clock, same machine
        window_end = time.monotonic() + (blocked_at + BLOCK_S - 0.5 - time.time())
        assert window_end - time.monotonic() > 1.0, "the test noticed the block too late"
        assert daemon.get("/health")[0] == 200
        while (left := window_end - time.monotonic()) > 0:
            fields = systemd.receive(left)
            assert fields is None or "WATCHDOG" not in fields, "a blocked trio loop still pinged"
        # Unblocked: pings resume.
        daemon.wait_until("the loop to unblock", lambda: "unblocked" in daemon.marks.read_text())
        systemd.wait_for("WATCHDOG", 3)

        # SIGTERM: STOPPING=1, then a clean exit.
        assert daemon.stop() == 0
        stopping = systemd.wait_for("STOPPING", 5)
        assert stopping["STOPPING"] == "1"
        log = daemon.stderr()
        bodies = _stored_bodies(daemon.data_dir / "demo" / "wadaemon.sqlite")

    # journald: every line carries a syslog priority; the tags are still there.
    lines = [line for line in log.splitlines() if line]
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), \
        [line for line in lines if not re.match(r"<[2-7]>", line)][:5]
    assert any(line.startswith("<6>INFO ") and "[history-sync] accountId=demo-1" in line for line in lines)
    assert any(line.startswith("<6>INFO ") and "[realtime] accountId=" in line for line in lines)
    # No message text above debug (the daemon ran at the default level, info).
    assert len(bodies) > 100
    leaked = [body for body in bodies if body in log]
    assert not leaked, leaked[:3]


def _stored_bodies(path: Path) -> list[str]:
    store = SqliteStore(path)
    try:
        bodies = [message.body for account in ("demo-1", "demo-2")
                  for thread in store.list_threads(account, limit=500)
                  for message in store.list_messages(thread_id_for(account, thread.client_jid), limit=10_000)]
    finally:
        store.close()
    return [body for body in bodies if len(body) >= 8]
