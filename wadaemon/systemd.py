"""systemd's notify protocol: READY, WATCHDOG, STATUS and STOPPING over ``NOTIFY_SOCKET``.

Why speak it at all: with ``Type=notify`` systemd (and whatever is ordered after the unit)
knows the daemon is *serving*, not merely forked; ``WatchdogSec=`` turns "the process exists"
into "the process makes progress", so a wedged daemon is restarted instead of sitting there
holding its accounts; ``STATUS=`` puts a one-line summary in ``systemctl status``.

Why no library: the protocol is one datagram of ``KEY=value`` lines to a unix socket (a path,
or an abstract name written with a leading ``@``). ``sd_notify`` in libsystemd is not on every
machine and the python bindings are not on PyPI in a usable form; twenty lines are clearer.
Without ``NOTIFY_SOCKET`` (a terminal, a test, a container without systemd) every call is a
no-op, and a failing send is logged at debug and never raised: systemd being unreachable must
not stop the daemon.

Why the watchdog runs in trio: ``WATCHDOG=1`` must prove the part that does the work is alive.
The HTTP server has its own thread and keeps answering while the trio loop is blocked (that is
on purpose: probes never wait for the daemon), so a ping from there would hide exactly the
failure the watchdog exists for. ``run_notifier`` is a child of the root supervisor and sleeps
on trio's clock between pings; a blocked loop sends nothing, and systemd kills and restarts the
unit after ``WatchdogSec``. The interval is half of ``WATCHDOG_USEC`` (systemd's own advice),
so one late tick does not cost a restart.

Readiness: ``READY=1`` goes out once ``Daemon.run`` has started the whole tree and turned
/ready to 200 (the HTTP child only reports started once it listens, so the probes answer by
then). ``STOPPING=1`` goes out as soon as shutdown begins; systemd leaves the watchdog aside
from then on, so the flush (up to 30 s) is bounded by ``TimeoutStopSec`` instead.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

import trio

from wadaemon.status import DaemonStatus

log = logging.getLogger("wadaemon.systemd")

#: How often ``STATUS=`` is refreshed when no watchdog is configured.
STATUS_INTERVAL_S = 5.0


class Notifier:
    """Sends notify datagrams to ``address`` (None: every send is a no-op)."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._socket: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """From ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (the watchdog is ours
        only when ``WATCHDOG_PID`` is unset or names this process)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog: int | None = None
        pid = env.get("WATCHDOG_PID")
        usec = env.get("WATCHDOG_USEC", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Half the watchdog timeout, or None when systemd set no watchdog."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2_000_000

    def send(self, **fields: str) -> bool:
        """One datagram ``KEY=value`` per field (``ready="1"`` → ``READY=1``). True if sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto(message.encode(), target)
        except OSError as exc:
            log.debug("systemd notify failed address=%s: %s", self.address, exc)
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def status_line(board: DaemonStatus) -> str:
    """``STATUS=`` text: mode, accounts connected out of those run here, journal backlog."""
    snapshot = board.snapshot()
    connected = sum(1 for a in snapshot.accounts if a.state == "connected")
    backlog = sum(a.journal_backlog for a in snapshot.accounts)
    return f"{snapshot.mode}: {connected}/{len(snapshot.accounts)} accounts connected, backlog {backlog}"


async def run_notifier(
    notifier: Notifier,
    board: DaemonStatus,
    ready: trio.Event,
    *,
    summary: Callable[[DaemonStatus], str] = status_line,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The supervisor child: watchdog pings from the trio loop, READY once ``ready`` is set,
    STATUS when the summary changes, STOPPING when cancelled (the daemon runs it only when
    ``NOTIFY_SOCKET`` is set)."""
    task_status.started()
    interval = notifier.watchdog_interval_s
    tick = min(interval, STATUS_INTERVAL_S) if interval is not None else STATUS_INTERVAL_S
    sent_ready = False
    last_status = ""
    try:
        while True:
            fields: dict[str, str] = {}
            if interval is not None:
                fields["watchdog"] = "1"
            if ready.is_set() and not sent_ready:
                fields["ready"] = "1"
            line = summary(board)
            if line != last_status:
                fields["status"] = line
            if notifier.send(**fields):
                sent_ready = sent_ready or "ready" in fields
                last_status = fields.get("status", last_status)
            if ready.is_set():
                await trio.sleep(tick)
            else:
                with trio.move_on_after(tick):
                    await ready.wait()
    finally:
        notifier.send(stopping="1", status="stopping: flushing pending writes")
