"""A real daemon process on simulated phones: ``wadaemon run`` (``cli.run_daemon``: settings
from the environment, the configured store, HTTP, signals) with a SimPhone per account of
``WADAEMON_ACCOUNTS`` in place of neonize, for the tests that signal a daemon process.

    python -m tests.spine.sim_daemon HISTORY_MESSAGES
"""

from __future__ import annotations

import sys

from wadaemon.cli import run_daemon
from wadaemon.config import load_settings
from wadaemon.daemon import fixed_transports
from wadaemon.logs import setup_logging
from wadaemon.whatsapp.simphone import SimPhone


def main(history: int) -> None:
    settings = load_settings()
    setup_logging(settings.instance_id, settings.log_level)
    phones = {account: SimPhone(account, seed=n, chats=20, history_messages=history, chunk_size=100)
              for n, account in enumerate(settings.accounts)}
    run_daemon(settings, lambda: list(phones), fixed_transports(phones))


if __name__ == "__main__":
    main(int(sys.argv[1]))
