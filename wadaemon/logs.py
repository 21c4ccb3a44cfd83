"""Logging for journalctl: one line per event, tags first, no message text above debug.

Configured before anything imports neonize, because importing neonize calls
``logging.basicConfig(level=INFO)`` and would otherwise pick the format.

Under systemd (``JOURNAL_STREAM`` or ``INVOCATION_ID`` in the environment) every line starts
with its syslog priority, ``<3>`` error … ``<7>`` debug: journald strips the prefix and files
the line at that priority, so ``journalctl -u wadaemon@a -p warning`` shows warnings and
errors only. The prefix goes on *each* line of a multi-line record (a traceback), because
journald reads a stream line by line and would file the continuation lines as info. No
dependency on python-systemd: stderr is already connected to the journal, the prefix is all
it takes. The rest of the line is unchanged, so the log tags operators grep for (``[realtime]``,
``[history-sync]`` …) stay greppable in ``journalctl`` output and in plain terminals alike.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

#: Python level → syslog priority (RFC 5424: 2 crit, 3 err, 4 warning, 6 info, 7 debug).
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def syslog_priority(levelno: int) -> int:
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return 7


def under_systemd(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


class JournalFormatter(logging.Formatter):
    """Prefixes every line of the formatted record with ``<priority>``."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def formatter(instance_id: str, environ: Mapping[str, str] | None = None) -> logging.Formatter:
    fmt = f"%(levelname)s instance={instance_id} %(name)s %(message)s"
    return JournalFormatter(fmt) if under_systemd(environ) else logging.Formatter(fmt)


def setup_logging(instance_id: str, level: str = "INFO") -> None:
    """``level`` is ``Settings.log_level`` (``WADAEMON_LOG_LEVEL``, validated with the rest)."""
    chosen = level.upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(instance_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen)
    for noisy in ("aiohttp.access", "urllib3", "google", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
