"""What the two failover tests with real processes share (``tests/cluster/test_failover_processes``
with in-process phones, ``tests/multiproc/test_chaos`` with the simulated WhatsApp service):
the lease timing they run with, the wall clock they measure with, and the watch on the epochs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from wadaemon.store.contract import Store

LEASE_S = 6.0
#: 6 s leases: short enough for a quick test, long enough that three busy processes on a
#: loaded 2-core machine do not miss renew deadlines (at 3 s they did, restarting accounts).
TIMING = {"WADAEMON_ACCOUNT_LEASE_MS": "6000", "WADAEMON_ACCOUNT_RENEW_DEADLINE_MS": "4000",
          "WADAEMON_ACCOUNT_RETRY_PERIOD_MS": "1000"}


def now_ms() -> int:
    """Wall-clock ms, the clock the processes log and the service records in. Take it *before*
    sending a signal: a resumed process may act before this process runs again."""
    return int(time.time() * 1000)


class EpochWatch:
    """Reads every account lease ten times a second: (account, epoch) -> owners ever seen.
    The invariant the tests assert: every epoch names exactly one owner."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.owners: dict[tuple[str, int], set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                for lease in self.store.list_account_leases():
                    self.owners.setdefault((lease.key, lease.epoch), set()).add(lease.owner_id)
            self._stop.wait(0.1)

    def shared(self) -> dict[tuple[str, int], set[str]]:
        """The epochs seen with more than one owner (none, if fencing holds)."""
        return {key: owners for key, owners in self.owners.items() if len(owners) > 1}

    @contextlib.contextmanager
    def running(self) -> Iterator[EpochWatch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
