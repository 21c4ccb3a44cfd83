"""What a supervisor runs: child specifications.

A child is an async callable taking a keyword-only ``task_status`` — the same contract as
:meth:`trio.Nursery.start` — so that "up" means "finished initialising" rather than "task
spawned". That is what lets a parent (and the daemon's /ready) wait for a subtree to be up.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import trio

RestartType = Literal["permanent", "transient", "temporary"]
"""``permanent``: always restarted (a return is as unexpected as a crash); ``transient``:
restarted only when it raised (returning means its work is done); ``temporary``: never
restarted."""

Strategy = Literal["one_for_one", "one_for_all"]
"""``one_for_one``: restart only the child that ended; ``one_for_all``: cancel and restart
all children, for children that share state (e.g. channels) and cannot outlive each other."""


class ChildFn(Protocol):
    """A supervised callable. It must call ``task_status.started()`` once initialised (a
    child that never does keeps its supervisor from reporting started) and then run until
    cancelled — or return/raise, which its restart type decides what to do about."""

    def __call__(self, *, task_status: trio.TaskStatus[None]) -> Awaitable[object]: ...


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to run one child: a name unique within its supervisor, the callable, and when to
    restart it. Pass ``other_supervisor.run`` as ``fn`` to nest a supervisor; the parent
    recognises it and includes its children in the health snapshot."""

    name: str
    fn: ChildFn
    restart: RestartType = "permanent"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a child needs a non-empty name")
        if self.restart not in get_args(RestartType):
            raise ValueError(f"unknown restart type {self.restart!r} for child {self.name!r}")
