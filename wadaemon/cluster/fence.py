"""The holder's side of one account lease: what stops the account and refuses its writes.

A ``Fence`` is created when an account lease is acquired and lives as long as that holding.
It carries a trio ``CancelScope`` whose *deadline* is the renew deadline
(``wadaemon.cluster.timing``): the account's whole subtree runs inside that scope, so when
renewals stop succeeding the subtree — socket, writers — is cancelled by trio's own clock, at
the deadline, with no task of ours having to notice. A successful renewal pushes the deadline
forward; a renewal that reports the lease taken revokes the fence at once.

Cancellation alone is not enough: writers flush what they hold in *shielded* ``finally``
blocks, and a shield ignores the deadline. So every account write also asks the fence first
(``StoreRunner.write`` checks ``valid()`` inside the account's lane, right before the store
call): past the deadline, or once revoked, the write raises ``LeaseLost`` and nothing reaches
the store. A process frozen past its lease (SIGSTOP, a pause) and resumed finds its deadline
passed on the monotonic clock before it runs anything else: trio expires deadlines before it
resumes tasks, and the shielded flushes are refused by ``valid()``. What the fence cannot
recall is a store call already handed to a worker thread when the process froze; such a write
carries data the old holder had journaled and is idempotent (message ids, forward-only
statuses), so it cannot duplicate anything.
"""

from __future__ import annotations

import trio

from wadaemon.domain import Lease


class Fence:
    def __init__(self, lease: Lease, deadline: float) -> None:
        """Created inside trio (the run's clock is what the deadline is measured on)."""
        self.lease = lease
        self.scope = trio.CancelScope(deadline=deadline)
        self.revoked = False
        self._clock = trio.lowlevel.current_clock()

    @property
    def deadline(self) -> float:
        return self.scope.deadline

    def valid(self) -> bool:
        """Still safely ours: not revoked and the renew deadline not reached (trio clock).

        Callable from any thread: it reads the run's clock object, which needs no trio context.
        A transport asks it before every connection it opens by itself (``Licence``), because
        a process resumed past its deadline runs its threads as soon as trio: a reconnect
        waiting on a thread could otherwise beat the cancellation that stops the transport,
        and open a second connection beside the new holder's."""
        # Not ``scope.cancel_called``: it reads trio's context. Only ``revoke`` and the
        # deadline ever cancel the scope, and both are checked here directly.
        return not self.revoked and self._clock.current_time() < self.scope.deadline

    def renewed(self, lease: Lease, deadline: float) -> bool:
        """A renewal sent at ``deadline - renew deadline`` succeeded. False when it came too
        late: the subtree was already cut off, and cannot be un-cancelled."""
        if not self.valid():
            return False
        self.lease = lease
        self.scope.deadline = max(self.scope.deadline, deadline)
        return True

    def revoke(self) -> None:
        """The lease is lost (or being given up): stop now, refuse every further write."""
        self.revoked = True
        self.scope.cancel()
