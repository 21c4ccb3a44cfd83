"""One wadaemon instance as a real process, for the failover tests.

``python -m tests.cluster.instance_process INSTANCE_ID DATA_DIR EVENTS_LOG ACCOUNTS...`` runs the
real daemon (ownership, leases, account subtrees, journal, actors) on the Firestore emulator
named by ``FIRESTORE_EMULATOR_HOST``/``FIRESTORE_PROJECT``, with the lease timing from the
environment. Each account's transport is a paired, quiet simulated phone that appends
``start|stop INSTANCE ACCOUNT unix_ms`` to ``EVENTS_LOG`` (one ``write`` of one line with
``O_APPEND``: lines from several processes never interleave) when its socket opens and closes,
so the test sees which process had which account's socket open, and when.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import trio

from wadaemon.config import load_settings
from wadaemon.daemon import Daemon
from wadaemon.logs import setup_logging
from wadaemon.store import open_store
from wadaemon.whatsapp.simphone import SimPhone
from wadaemon.whatsapp.transport import RawEventSink


class LoggedPhone(SimPhone):
    def __init__(self, account_id: str, instance_id: str, events: int) -> None:
        super().__init__(account_id, seed=1, chats=2, history_messages=0, paired=True)
        self.instance_id = instance_id
        self.events = events

    def _note(self, what: str) -> None:
        os.write(self.events, f"{what} {self.instance_id} {self.account_id} {int(time.time() * 1000)}\n".encode())

    def start(self, sink: RawEventSink) -> None:
        super().start(sink)
        self._note("start")

    def stop(self) -> None:
        self._note("stop")
        super().stop()


def main() -> None:
    instance_id, data_dir, events_log, *accounts = sys.argv[1:]
    settings = load_settings({**os.environ, "INSTANCE_ID": instance_id, "WADAEMON_DATA_DIR": data_dir})
    setup_logging(settings.instance_id, settings.log_level)
    events = os.open(events_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    store = open_store(settings)
    daemon = Daemon(settings, store, accounts, lambda account, _: LoggedPhone(account, instance_id, events),
                    serve=False)
    try:
        trio.run(daemon.run)
    finally:
        store.close()
        Path(data_dir, "exited").write_text("clean")


if __name__ == "__main__":
    main()
