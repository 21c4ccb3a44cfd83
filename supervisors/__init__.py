"""A small supervision library for trio, in the spirit of Erlang/OTP supervisors.

Children (async callables with a ``task_status``) run in a nursery and are restarted by
restart type (permanent/transient/temporary) and strategy (one_for_one/one_for_all), with
exponential backoff and a restart-intensity limit past which the supervisor fails upward.
Supervisors nest, and ``Supervisor.snapshot()`` reports the tree's health.

Deliberately independent of the application: stdlib, trio and msgspec only.

Example::

    async def worker(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        ...  # initialise
        task_status.started()
        ...  # serve until cancelled

    pipeline = Supervisor("pipeline", [ChildSpec("a", worker), ChildSpec("b", worker)],
                          strategy="one_for_all")
    root = Supervisor("root", [ChildSpec("pipeline", pipeline.run)],
                      intensity=Intensity(max_restarts=5, within_s=60))
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)  # returns once the whole tree is up
        await root.start_child(ChildSpec("extra", worker, restart="transient"))
        print(msgspec.json.encode(root.snapshot()))
"""

from supervisors.errors import SupervisorError, SupervisorEscalation
from supervisors.health import NodeHealth, NodeKind, NodeState, describe_error
from supervisors.policy import Backoff, Intensity, RestartWindow
from supervisors.spec import ChildFn, ChildSpec, RestartType, Strategy
from supervisors.supervisor import Supervisor

__all__ = [
    "Backoff",
    "ChildFn",
    "ChildSpec",
    "Intensity",
    "NodeHealth",
    "NodeKind",
    "NodeState",
    "RestartType",
    "RestartWindow",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorEscalation",
    "describe_error",
]
