"""Exceptions raised by supervisors.

A supervisor that gives up raises :class:`SupervisorEscalation` instead of re-raising the
child's own error: the parent must see *that a whole subtree gave up* (and be able to tell
it apart from an ordinary worker crash in logs and in the health snapshot), while the
original error stays reachable as ``__cause__`` for the traceback.
"""

from __future__ import annotations

from supervisors.health import describe_error


class SupervisorError(Exception):
    """A supervisor was asked to do something it cannot do (misuse, or not running)."""


class SupervisorEscalation(SupervisorError):
    """A supervisor gave up and failed upward; its parent treats this as a child failure.

    ``error`` (also chained as ``__cause__`` when raised) is the failure that made it give
    up; ``child`` names the child that failed last, or is ``None`` when the supervisor's own
    ``on_start`` hook failed.
    """

    def __init__(self, supervisor: str, child: str | None, error: Exception, reason: str) -> None:
        culprit = f"child {child!r}" if child is not None else "on_start"
        super().__init__(
            f"supervisor {supervisor!r} gave up: {reason}; last failure in {culprit}: "
            f"{describe_error(error)}"
        )
        self.supervisor = supervisor
        self.child = child
        self.error = error
        self.reason = reason
