"""Lease timing, in the manner of Kubernetes leader election.

Three durations, ``lease > renew deadline > retry period`` (validated in ``wadaemon.config``):

* **retry period**: every instance wakes up this often, renews *all* its account leases in one
  store round (``Store.renew_leases``), writes its heartbeat and looks at the others. Lease
  upkeep is therefore one commit per instance per retry period, whatever the number of
  accounts (``bench/leases.py`` gives the figures).
* **renew deadline**: when no renewal has succeeded for this long, measured on the holder's
  *monotonic* clock from the moment it *sent* its last successful renewal, the holder stops the
  account's subtree at once (socket first) and refuses every further write for it
  (``wadaemon.cluster.fence``). The deadline is a trio cancel-scope deadline, so a process
  that was frozen (SIGSTOP, a long pause) and resumes past it is cancelled by trio before any
  of its tasks runs again.
* **lease duration**: the document says ``expiresAtMs = holder's wall clock at send + lease``;
  another instance takes the account once its own wall clock has passed that.

Why this is safe: the holder computed ``expiresAtMs`` no earlier than it started the request
its deadline counts from, so by real time the holder has stopped at ``t + renew deadline``
while a successor can start no earlier than ``t + lease - drift``. Nobody overlaps as long as

    clock drift between hosts + time to close a socket  <  lease - renew deadline

(10 s with the defaults of 30 s / 20 s; NTP keeps hosts within milliseconds). A host whose
clock is *ahead* by more than that margin could take an account early; that is the one
assumption, and it is the same one Kubernetes makes.

Instance liveness is judged without comparing clocks: an instance is alive while its
heartbeat document *changes* — the reader notes, on its own monotonic clock, when it last saw
a new ``heartbeatAtMs`` — and dead after ``lease`` without a change (``share.Membership``).
"""

from __future__ import annotations

import msgspec

from wadaemon.config import Settings


class LeaseTiming(msgspec.Struct, frozen=True, kw_only=True):
    lease_ms: int
    renew_deadline_ms: int
    retry_period_ms: int

    @classmethod
    def of(cls, settings: Settings) -> LeaseTiming:
        return cls(lease_ms=settings.account_lease_ms, renew_deadline_ms=settings.account_renew_deadline_ms,
                   retry_period_ms=settings.account_retry_period_ms)

    @property
    def settle_ms(self) -> int:
        """How long a newly seen instance must stay alive before others hand it accounts:
        two retry periods, so one late heartbeat cannot start a hand-over."""
        return 2 * self.retry_period_ms

    @property
    def orphan_grace_ms(self) -> int:
        """How long a free account waits for its preferred instance before anyone takes it."""
        return 2 * self.retry_period_ms
