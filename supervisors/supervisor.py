"""The supervisor: runs child specs in a nursery and restarts them according to policy.

Design notes (the *why*):

* Every run of a child ("incarnation") is its own task with its own cancel scope, so the
  supervisor can stop one child (``stop_child``, a ``one_for_all`` restart) without touching
  the others, and can tell "we cancelled it" (``cancel_called`` on that scope) from "it
  ended on its own".
* Restart decisions are taken synchronously, in the exiting child's task, right after it
  ended. Nothing can interleave between the exit and the decision, so the tree never shows
  a dead child that is neither restarting nor stopped, and no central loop can be blocked
  by one child's backoff. Backoff delays run inside the new incarnation's scope, so
  cancelling a child in backoff is the same operation as cancelling a running one.
* The supervisor never raises from inside its nursery: an escalation is recorded, the
  nursery is cancelled, and the exception is raised once the nursery has closed. Callers get
  a plain :class:`SupervisorEscalation`, not an ``ExceptionGroup``.
* Shutdown is detected as "the child's surroundings are cancelled" (its effective deadline
  is ``-inf``, or already past): when the supervisor's own scope, or anything above it, is being cancelled,
  nothing is restarted, whatever the child did on its way out. ``trio.Cancelled`` is never
  caught, hence never counted as a failure.
* ``snapshot()`` may be called from another thread (the HTTP server): it only reads, and
  state changes and the snapshot's reads are serialised by a ``threading.Lock`` that is
  never held across an ``await``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Literal, get_args, overload

import trio

from supervisors.errors import SupervisorError, SupervisorEscalation
from supervisors.health import NodeHealth, NodeState, describe_error
from supervisors.policy import Backoff, Intensity, RestartWindow
from supervisors.spec import ChildSpec, Strategy

log = logging.getLogger("supervisors")

_TERMINAL: frozenset[NodeState] = frozenset({"stopped", "failed"})

_Launch = Literal["start", "restart"]


class _Incarnation:
    """One run of a child: its task's cancel scope and lifecycle events."""

    __slots__ = ("exited", "ready", "scope", "started")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.started = False
        self.ready = trio.Event()  # reported started, or exited without doing so
        self.exited = trio.Event()  # the task is gone (its finally blocks have run)


class _Node:
    """The supervisor's mutable record of one child."""

    __slots__ = (
        "attempt",
        "incarnation",
        "last_error",
        "pending",
        "removed",
        "restarts",
        "since",
        "spec",
        "started_in_run",
        "state",
        "subtree",
        "up_at",
    )

    def __init__(self, spec: ChildSpec, since: float) -> None:
        self.spec = spec
        self.subtree = _subtree_of(spec)
        self.state: NodeState = "stopped"
        self.since = since
        self.restarts = 0
        self.last_error: str | None = None
        self.incarnation: _Incarnation | None = None
        self.pending: _Launch | None = None  # to be (re)started by the current generation
        self.started_in_run = False  # reported started at least once in the current run
        self.removed = False
        self.attempt = 0  # consecutive restarts, for backoff
        self.up_at: float | None = None  # trio time it last reported started


class _ChildStatus(trio.TaskStatus[object]):
    """The ``task_status`` handed to a child: reports "started" to its supervisor."""

    def __init__(self, supervisor: Supervisor, node: _Node, incarnation: _Incarnation) -> None:
        self._supervisor = supervisor
        self._node = node
        self._incarnation = incarnation

    @overload
    def started(self: trio.TaskStatus[None]) -> None: ...

    @overload
    def started(self, value: object) -> None: ...

    def started(self, value: object = None) -> None:
        """Report the child up. A ``value`` is accepted for compatibility and ignored."""
        if self._incarnation.started:
            raise RuntimeError("called 'started' twice on the same task status")
        self._supervisor._child_started(self._node, self._incarnation)


def _subtree_of(spec: ChildSpec) -> Supervisor | None:
    owner = getattr(spec.fn, "__self__", None)
    if isinstance(owner, Supervisor) and getattr(spec.fn, "__func__", None) is Supervisor.run:
        return owner
    return None


class Supervisor:
    """Runs children in a nursery, restarts them per their restart type and the strategy,
    and fails upward with :class:`SupervisorEscalation` when restarts exceed ``intensity``.

    A supervisor is itself a child: pass ``supervisor.run`` as a :class:`ChildSpec`'s ``fn``.
    It may be run again after it ended (a parent restarting it); its children — including
    ones added by ``start_child`` — are then all started afresh, restart intensity starts
    from zero, and restart counts in the snapshot keep accumulating.

    ``on_start`` is called (synchronously, in trio) before each generation of children is
    started: at every ``run`` and before every ``one_for_all`` restart — the place to create
    state the children share, such as fresh memory channels. If it raises, the supervisor
    escalates. ``rng`` draws the backoff jitter (inject a seeded one for reproducibility).
    ``clock`` timestamps state changes for the snapshot's ``since`` (see
    :mod:`supervisors.health`); it is also called once per child at construction.
    """

    def __init__(
        self,
        name: str,
        children: Iterable[ChildSpec] = (),
        *,
        strategy: Strategy = "one_for_one",
        intensity: Intensity | None = None,
        backoff: Backoff | None = None,
        on_start: Callable[[], object] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if strategy not in get_args(Strategy):
            raise ValueError(f"unknown strategy {strategy!r}")
        self.name = name
        self.strategy: Strategy = strategy
        self.intensity = intensity if intensity is not None else Intensity()
        self.backoff = backoff if backoff is not None else Backoff()
        self._on_start = on_start
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        for spec in children:
            if spec.name in self._nodes:
                raise ValueError(f"duplicate child name {spec.name!r} in supervisor {name!r}")
            self._nodes[spec.name] = _Node(spec, clock())
        self._state: NodeState = "stopped"
        self._since = clock()
        self._runs = 0
        self._last_error: str | None = None
        self._running = False
        self._nursery: trio.Nursery | None = None
        self._escalation: SupervisorEscalation | None = None
        self._window = RestartWindow(self.intensity)
        self._generation_scope: trio.CancelScope | None = None
        self._group_attempt = 0
        self._group_up_at: float | None = None
        self._changed = trio.Event()

    # ------------------------------------------------------------------ public API

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise until cancelled, or raise :class:`SupervisorEscalation` on giving up.

        Children are started in order, each once the previous one reported started (or
        ended), so later children may rely on earlier ones. ``task_status.started()`` is
        called once every child is up: reported started, or ended for good.
        """
        if self._running:
            raise SupervisorError(f"supervisor {self.name!r} is already running")
        self._running = True
        self._runs += 1
        self._escalation = None
        self._window = RestartWindow(self.intensity)
        self._group_attempt = 0
        self._group_up_at = None
        self._set_own_state("starting")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                with self._lock:
                    for node in self._nodes.values():
                        node.pending = "start"
                        node.started_in_run = False
                        node.attempt = 0
                        self._set_state_locked(node, "starting")
                self._begin_generation(0.0, [])
                await self._wait_until(self._is_up)
                self._set_own_state("running")
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._generation_scope = None
            self._running = False
            with self._lock:
                for node in self._nodes.values():
                    node.pending = None
                    if node.state not in _TERMINAL:
                        self._set_state_locked(node, "stopped")
            self._set_own_state("failed" if self._escalation is not None else "stopped")
        if self._escalation is not None:
            raise self._escalation from self._escalation.error

    async def start_child(self, spec: ChildSpec) -> None:
        """Add a child to the running supervisor and return once it reported started.

        The child stays in the tree until ``stop_child`` (and is started again whenever the
        supervisor is). A name may be reused once its previous child ended for good.
        Raises :class:`SupervisorError` if the supervisor is not running, or if the child
        ended for good or the supervisor stopped before the child reported started.
        """
        nursery = self._nursery
        if nursery is None or self._escalation is not None:
            raise SupervisorError(f"supervisor {self.name!r} is not running")
        with self._lock:
            previous = self._nodes.get(spec.name)
            if previous is not None:
                if not self._is_finished(previous):
                    raise ValueError(
                        f"supervisor {self.name!r} already has a child named {spec.name!r}"
                    )
                previous.removed = True
                del self._nodes[spec.name]
            node = self._nodes[spec.name] = _Node(spec, self._clock())
        self._spawn(node, 0.0, restart=False)

        def settled() -> bool:
            return (
                node.started_in_run
                or self._is_finished(node)
                or node.removed
                or self._nursery is not nursery
                or self._escalation is not None
            )

        await self._wait_until(settled)
        if not node.started_in_run:
            detail = f" (last error: {node.last_error})" if node.last_error else ""
            raise SupervisorError(
                f"child {spec.name!r} of supervisor {self.name!r} ended before it reported "
                f"started{detail}"
            )

    async def stop_child(self, name: str) -> None:
        """Remove a child from the tree; cancel it if it runs (or waits in backoff) and
        return once it is gone — its ``finally`` blocks have run. It is not restarted.
        Raises ``KeyError`` for an unknown name. Works whether or not the supervisor runs.
        """
        with self._lock:
            try:
                node = self._nodes.pop(name)
            except KeyError:
                raise KeyError(f"supervisor {self.name!r} has no child named {name!r}") from None
            node.removed = True
            node.pending = None
        self._touch()
        incarnation = node.incarnation
        if incarnation is not None:
            incarnation.scope.cancel()
            await incarnation.exited.wait()

    def snapshot(self) -> NodeHealth:
        """The health of this supervisor and its subtree. Read-only and thread-safe."""
        with self._lock:
            own = (self._state, max(self._runs - 1, 0), self._last_error, self._since)
            rows = [
                (n.spec.name, n.subtree, n.state, n.restarts, n.last_error, n.since)
                for n in self._nodes.values()
            ]
        children = tuple(
            NodeHealth(
                name=name,
                kind="worker" if subtree is None else "supervisor",
                state=state,
                restarts=restarts,
                last_error=last_error,
                since=since,
                children=() if subtree is None else subtree.snapshot().children,
            )
            for name, subtree, state, restarts, last_error, since in rows
        )
        state, restarts, last_error, since = own
        return NodeHealth(
            name=self.name,
            kind="supervisor",
            state=state,
            restarts=restarts,
            last_error=last_error,
            since=since,
            children=children,
        )

    # ------------------------------------------------------------- state keeping

    def _touch(self) -> None:
        """Wake everything waiting in ``_wait_until`` to re-check its condition."""
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    def _set_state_locked(self, node: _Node, state: NodeState) -> None:
        if node.state != state:
            node.state = state
            node.since = self._clock()

    def _set_state(self, node: _Node, state: NodeState, error: Exception | None = None) -> None:
        with self._lock:
            self._set_state_locked(node, state)
            if error is not None:
                node.last_error = describe_error(error)
        self._touch()

    def _set_own_state(self, state: NodeState) -> None:
        with self._lock:
            if self._state != state:
                self._state = state
                self._since = self._clock()
            if state == "failed" and self._escalation is not None:
                self._last_error = describe_error(self._escalation)
        self._touch()

    @staticmethod
    def _is_finished(node: _Node) -> bool:
        return node.state in _TERMINAL and node.pending is None and node.incarnation is None

    def _is_up(self) -> bool:
        """Every child reported started in this run, or ended for good — and we are not
        giving up (a child failing for good may be what made us escalate)."""
        with self._lock:
            return self._escalation is None and all(
                node.pending is None and (node.started_in_run or node.state in _TERMINAL)
                for node in self._nodes.values()
            )

    # ------------------------------------------------------------- child lifecycle

    def _spawn(self, node: _Node, delay: float, *, restart: bool) -> _Incarnation:
        assert self._nursery is not None
        incarnation = _Incarnation()
        node.incarnation = incarnation
        node.up_at = None
        self._set_state(node, "backoff" if delay > 0 else "starting")
        self._nursery.start_soon(
            self._run_incarnation,
            node,
            incarnation,
            delay,
            restart,
            name=f"{self.name}/{node.spec.name}",
        )
        return incarnation

    async def _run_incarnation(
        self, node: _Node, incarnation: _Incarnation, delay: float, restart: bool
    ) -> None:
        error: Exception | None = None
        try:
            with incarnation.scope:
                if delay > 0:
                    await trio.sleep(delay)
                if restart:
                    with self._lock:
                        node.restarts += 1  # counted when it happens, not when decided
                self._set_state(node, "starting")
                await node.spec.fn(task_status=_ChildStatus(self, node, incarnation))
        except Exception as exc:
            error = exc
        finally:
            if node.incarnation is incarnation:
                node.incarnation = None
            incarnation.exited.set()
            incarnation.ready.set()
            self._touch()
        # Only reached when no BaseException (trio.Cancelled included) escaped the child.
        self._child_ended(node, incarnation, error)

    def _child_started(self, node: _Node, incarnation: _Incarnation) -> None:
        incarnation.started = True
        incarnation.ready.set()
        if node.incarnation is not incarnation or incarnation.scope.cancel_called:
            return  # a stale report from a run we are already stopping
        node.up_at = trio.current_time()
        node.started_in_run = True
        self._set_state(node, "running")

    def _child_ended(self, node: _Node, incarnation: _Incarnation, error: Exception | None) -> None:
        """Decide what a child's end means. Synchronous on purpose (see module docs)."""
        label = f"{self.name}/{node.spec.name}"
        if incarnation.scope.cancel_called or node.removed:
            # We stopped it (stop_child or a one_for_all restart); its fate was decided then.
            if error is not None:
                with self._lock:
                    node.last_error = describe_error(error)
                log.warning("%s raised while being stopped", label, exc_info=error)
            return
        if trio.current_effective_deadline() <= trio.current_time():
            # Our surroundings are cancelled (-inf) or past their deadline: the supervisor
            # is shutting down or escalating, so nothing is restarted any more.
            if error is not None:
                log.warning("%s raised during shutdown", label, exc_info=error)
            self._set_state(node, "stopped" if error is None else "failed", error)
            return
        restart = node.spec.restart
        if not (restart == "permanent" or (restart == "transient" and error is not None)):
            if error is not None:
                log.error("%s failed; %s, not restarted", label, restart, exc_info=error)
            self._set_state(node, "stopped" if error is None else "failed", error)
            return
        cause = error if error is not None else RuntimeError("a permanent child returned")
        now = trio.current_time()
        if not self._window.admit(now):
            self._set_state(node, "failed", error)
            reason = (
                f"more than {self.intensity.max_restarts} restarts within "
                f"{self.intensity.within_s:g}s"
            )
            self._escalate(SupervisorEscalation(self.name, node.spec.name, cause, reason))
            return
        if self.strategy == "one_for_one":
            self._restart_one(node, now, error, cause)
        else:
            self._restart_all(node, now, error, cause)

    def _restart_one(self, node: _Node, now: float, error: Exception | None, cause: Exception) -> None:
        if node.up_at is not None and now - node.up_at >= self.backoff.reset_after_s:
            node.attempt = 0
        delay = self.backoff.delay(node.attempt, self._rng)
        node.attempt += 1
        log.warning(
            "%s/%s ended (%s); restarting in %.3gs",
            self.name, node.spec.name, describe_error(cause), delay, exc_info=error,
        )
        if error is not None:
            with self._lock:
                node.last_error = describe_error(error)
        self._spawn(node, delay, restart=True)

    def _restart_all(self, failed: _Node, now: float, error: Exception | None, cause: Exception) -> None:
        if self._group_up_at is not None and now - self._group_up_at >= self.backoff.reset_after_s:
            self._group_attempt = 0
        delay = self.backoff.delay(self._group_attempt, self._rng)
        self._group_attempt += 1
        log.warning(
            "%s/%s ended (%s); restarting all children in %.3gs",
            self.name, failed.spec.name, describe_error(cause), delay, exc_info=error,
        )
        stopping: list[_Incarnation] = []
        with self._lock:
            if error is not None:
                failed.last_error = describe_error(error)
            for node in self._nodes.values():
                was_live = node.incarnation is not None or node is failed
                if node.incarnation is not None:
                    node.incarnation.scope.cancel()
                    stopping.append(node.incarnation)
                if not was_live and node.pending is None:
                    continue  # ended for good earlier: stays ended
                if was_live and node.spec.restart == "temporary":
                    self._set_state_locked(node, "stopped")  # never restarted, even here
                    continue
                if was_live:
                    node.pending = "restart"
                self._set_state_locked(node, "backoff")
        self._touch()
        self._begin_generation(delay, stopping)

    def _begin_generation(self, delay: float, stopping: list[_Incarnation]) -> None:
        """Start the pending children in order (after ``stopping`` ended and ``delay``),
        superseding a generation still being started."""
        assert self._nursery is not None
        if self._generation_scope is not None:
            self._generation_scope.cancel()
        scope = self._generation_scope = trio.CancelScope()
        self._nursery.start_soon(
            self._run_generation, scope, delay, stopping, name=f"{self.name}/generation"
        )

    async def _run_generation(
        self, scope: trio.CancelScope, delay: float, stopping: list[_Incarnation]
    ) -> None:
        with scope:
            for incarnation in stopping:
                await incarnation.exited.wait()
            if delay > 0:
                await trio.sleep(delay)
            if self._on_start is not None:
                try:
                    self._on_start()
                except Exception as exc:
                    self._escalate(SupervisorEscalation(self.name, None, exc, "on_start failed"))
                    return
            self._group_up_at = trio.current_time()
            for node in list(self._nodes.values()):
                # A newer generation may have superseded this one since our last checkpoint.
                if scope.cancel_called:
                    return
                launch = node.pending
                if launch is None or node.removed:
                    continue
                node.pending = None
                incarnation = self._spawn(node, 0.0, restart=launch == "restart")
                await incarnation.ready.wait()
        if self._generation_scope is scope:
            self._generation_scope = None

    def _escalate(self, escalation: SupervisorEscalation) -> None:
        """Give up: remember why, and cancel everything; ``run`` raises once it is down."""
        if self._escalation is None:
            self._escalation = escalation
            log.error("%s", escalation)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
