"""The health snapshot of a supervision tree, as shown by the daemon's /diag endpoint.

Snapshots are immutable msgspec Structs so they encode straight to JSON and can be handed to
another thread (the HTTP server) without copying.

``since`` is the value of the owning supervisor's ``clock`` at the node's last state change.
The default clock is :func:`time.time` (wall-clock seconds since the epoch) because a human
reads /diag, and trio's own clock has an arbitrary, per-run offset. Tests pass
``clock=trio.current_time`` to get exact values under ``MockClock``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

NodeState = Literal["starting", "running", "backoff", "stopped", "failed"]
"""``starting``: running but has not reported started yet; ``running``: reported started;
``backoff``: waiting to be restarted; ``stopped``: ended and will not be restarted (normal
exit, shutdown, or never run); ``failed``: raised and will not be restarted."""

NodeKind = Literal["worker", "supervisor"]

ERROR_TEXT_LIMIT = 200


class NodeHealth(msgspec.Struct, frozen=True, kw_only=True):
    """One node of the supervision tree.

    ``restarts`` counts how often the node was restarted over the supervisor's lifetime (it
    is not reset when the supervisor itself is restarted). ``last_error`` is the last failure
    as ``"ExcType: message"``, kept after recovery so flapping stays visible. For a nested
    supervisor, ``state``/``restarts``/``last_error``/``since`` are the parent's view of it
    and ``children`` are its own children.
    """

    name: str
    kind: NodeKind
    state: NodeState
    restarts: int
    last_error: str | None
    since: float
    children: tuple[NodeHealth, ...] = ()

    def child(self, name: str) -> NodeHealth:
        """The direct child called ``name``; ``KeyError`` if there is none."""
        for node in self.children:
            if node.name == name:
                return node
        raise KeyError(name)


def describe_error(exc: BaseException) -> str:
    """``"ExcType: message"`` on one line, short enough for a status page."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if len(text) > ERROR_TEXT_LIMIT:
        text = text[: ERROR_TEXT_LIMIT - 1] + "…"
    return text
