"""A scripted child for supervisor tests: each run follows the next step of its plan and
records what happened (with trio timestamps), so tests synchronise on events, not sleeps."""

from __future__ import annotations

from collections.abc import Callable

import trio

STEPS = ("serve", "fail", "return", "fail_early", "return_early")


class Boom(Exception):
    """The failure probes raise."""


Step = str | tuple[str, float]


class Probe:
    """Plan steps, one per run (the last is repeated, or ``default`` once exhausted):

    * ``serve``: report started, then run until cancelled;
    * ``fail`` / ``return``: report started, then raise :class:`Boom` / return;
    * ``fail_early`` / ``return_early``: raise / return without reporting started.

    A step may be ``(step, seconds)``: wait that long first (after starting for ``fail`` and
    ``return``, before ending for the early ones). ``start_delay`` delays every start.
    """

    def __init__(
        self,
        name: str,
        *plan: Step,
        default: Step = "serve",
        start_delay: float = 0.0,
        journal: list[str] | None = None,
    ) -> None:
        self.name = name
        self.plan = plan
        self.default = default
        self.start_delay = start_delay
        self.journal = journal if journal is not None else []
        self.runs: list[float] = []  # trio time each run began
        self.ups: list[float] = []  # trio time each run reported started
        self.ends: list[float] = []  # trio time each run's finally ran
        self.errors: list[Boom] = []
        self._changed = trio.Event()

    def _note(self, what: str) -> None:
        self.journal.append(f"{self.name}:{what}")
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, condition: Callable[[Probe], bool]) -> None:
        while not condition(self):
            await self._changed.wait()

    async def wait_runs(self, n: int) -> None:
        await self.wait_for(lambda p: len(p.runs) >= n)

    async def wait_ups(self, n: int) -> None:
        await self.wait_for(lambda p: len(p.ups) >= n)

    async def wait_ends(self, n: int) -> None:
        await self.wait_for(lambda p: len(p.ends) >= n)

    def _step(self, run: int) -> tuple[str, float]:
        step = self.plan[run] if run < len(self.plan) else self.default
        kind, hold = (step, 0.0) if isinstance(step, str) else step
        assert kind in STEPS, kind
        return kind, hold

    def _boom(self, run: int) -> Boom:
        error = Boom(f"{self.name} run {run}")
        self.errors.append(error)
        return error

    async def __call__(self, *, task_status: trio.TaskStatus[None]) -> None:
        run = len(self.runs)
        kind, hold = self._step(run)
        self.runs.append(trio.current_time())
        self._note("run")
        try:
            if self.start_delay:
                await trio.sleep(self.start_delay)
            if kind in ("fail_early", "return_early"):
                await trio.sleep(hold)
                if kind == "fail_early":
                    raise self._boom(run)
                return
            task_status.started()
            self.ups.append(trio.current_time())
            self._note("up")
            if kind == "serve":
                await trio.sleep_forever()
            await trio.sleep(hold)
            if kind == "fail":
                raise self._boom(run)
        finally:
            self.ends.append(trio.current_time())
            self._note("end")
