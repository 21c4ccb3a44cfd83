"""``ActionBridge``: how an HTTP handler acts *inside* the trio daemon.

Probes only read (the status board, the store). Later endpoints must act — start a backfill,
send a message — and those actions live in trio: channels, nurseries, per-account actors.
trio objects must only be touched from the trio thread, so a handler hands a trio function to
``trio.from_thread.run`` with the daemon's ``TrioToken``; trio runs it as a system task and
the result (or exception) comes back to the calling thread.

``trio.from_thread.run`` blocks its thread until the function finishes, so it runs in the
loop's default executor: the asyncio loop keeps serving other requests (and probes) while an
action is in progress.

Keep bridged functions short (enqueue work, return an id): the HTTP request waits for them.
When the trio run has ended, or is ending and cancels the function, ``call`` raises
``DaemonUnavailable`` — a 503 through the error middleware, not a 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar, TypeVarTuple, Unpack

import trio

from wadaemon.http.errors import ApiError

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class DaemonUnavailable(ApiError):
    """The trio side is gone or shutting down: the action cannot run."""

    def __init__(self, message: str = "the daemon is not running") -> None:
        super().__init__(503, "unavailable", message)


class ActionBridge:
    """Runs trio functions in the daemon's trio run from the HTTP thread's loop."""

    def __init__(self, trio_token: trio.lowlevel.TrioToken) -> None:
        self._token = trio_token

    @classmethod
    def current(cls) -> ActionBridge:
        """A bridge into the trio run this is called from (call it from trio)."""
        return cls(trio.lowlevel.current_trio_token())

    async def call(self, async_fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
        """``await async_fn(*args)`` inside trio; its result or exception comes back here."""

        def run_in_trio() -> T:
            try:
                return trio.from_thread.run(async_fn, *args, trio_token=self._token)
            except trio.RunFinishedError as exc:
                raise DaemonUnavailable() from exc
            except trio.Cancelled as exc:  # the trio run is shutting down
                raise DaemonUnavailable("the daemon is stopping") from exc

        return await asyncio.get_running_loop().run_in_executor(None, run_in_trio)
