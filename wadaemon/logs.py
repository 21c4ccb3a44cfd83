"""Logging for journalctl: one line per event, tags first, no message text above debug.

Configured before anything imports neonize, because importing neonize calls
``logging.basicConfig(level=INFO)`` and would otherwise pick the format (shared/NEONIZE.md).
"""

from __future__ import annotations

import logging
import sys


def setup_logging(instance_id: str, level: str = "INFO") -> None:
    """``level`` is ``Settings.log_level`` (``WADAEMON_LOG_LEVEL``, validated with the rest)."""
    chosen = level.upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(levelname)s instance={instance_id} %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen)
    for noisy in ("aiohttp.access", "urllib3", "google", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
