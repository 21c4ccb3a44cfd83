"""The health snapshot: a msgspec Struct tree for /diag, readable from another thread."""

from __future__ import annotations

import threading
import time

import msgspec
import trio
import trio.testing

from supervisors import Backoff, ChildSpec, NodeHealth, Supervisor
from tests.supervisors.probes import Probe

NO_JITTER = Backoff(base_s=1.0, factor=2.0, max_s=5.0, jitter=0.0)


async def test_snapshot_describes_the_tree(autojump_clock: trio.testing.MockClock) -> None:
    worker = Probe("w", ("fail", 0.5))
    leaf = Probe("x", start_delay=2.0)
    sub = Supervisor("sub", [ChildSpec("x", leaf)], clock=trio.current_time)
    root = Supervisor(
        "root",
        [ChildSpec("w", worker), ChildSpec("sub", sub.run)],
        backoff=NO_JITTER,
        clock=trio.current_time,
    )
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(root.run)
            await worker.wait_ends(1)
            during = root.snapshot()
            assert (during.state, during.since) == ("starting", 0.0)
            assert during.child("w") == NodeHealth(
                name="w",
                kind="worker",
                state="backoff",
                restarts=0,  # counted once the restart happens
                last_error="Boom: w run 0",
                since=0.5,
            )
            assert during.child("sub").child("x").state == "starting"

            await leaf.wait_ups(1)
            await trio.testing.wait_all_tasks_blocked()
            snap = root.snapshot()
            assert trio.current_time() == 2.0
            assert snap == NodeHealth(
                name="root",
                kind="supervisor",
                state="running",
                restarts=0,
                last_error=None,
                since=2.0,
                children=(
                    NodeHealth(
                        name="w",
                        kind="worker",
                        state="running",
                        restarts=1,
                        last_error="Boom: w run 0",
                        since=1.5,
                    ),
                    NodeHealth(
                        name="sub",
                        kind="supervisor",
                        state="running",
                        restarts=0,
                        last_error=None,
                        since=2.0,
                        children=(
                            NodeHealth(
                                name="x",
                                kind="worker",
                                state="running",
                                restarts=0,
                                last_error=None,
                                since=2.0,
                            ),
                        ),
                    ),
                ),
            )
            # /diag reads it from the HTTP server's thread (a blocking join is fine here:
            # trio.to_thread would let the autojumping clock run while the thread works)
            from_thread: list[NodeHealth] = []
            reader = threading.Thread(target=lambda: from_thread.append(root.snapshot()))
            reader.start()
            reader.join()
            assert from_thread == [snap]

            as_json = msgspec.json.decode(msgspec.json.encode(snap))
            assert as_json["children"][0] == {
                "name": "w",
                "kind": "worker",
                "state": "running",
                "restarts": 1,
                "last_error": "Boom: w run 0",
                "since": 1.5,
                "children": [],
            }
            assert as_json["children"][1]["children"][0]["name"] == "x"
            assert msgspec.json.decode(msgspec.json.encode(snap), type=NodeHealth) == snap

            await trio.sleep(8.0)
            nursery.cancel_scope.cancel()

    after = root.snapshot()
    assert (after.state, after.since) == ("stopped", 10.0)
    assert [(c.name, c.state, c.since) for c in after.children] == [
        ("w", "stopped", 10.0),
        ("sub", "stopped", 10.0),
    ]
    assert after.child("sub").child("x").state == "stopped"


async def test_snapshot_before_running_lists_stopped_children() -> None:
    sup = Supervisor("idle", [ChildSpec("a", Probe("a"))], clock=lambda: 42.0)
    snap = sup.snapshot()
    assert (snap.name, snap.state, snap.since, snap.restarts) == ("idle", "stopped", 42.0, 0)
    assert snap.child("a") == NodeHealth(
        name="a", kind="worker", state="stopped", restarts=0, last_error=None, since=42.0
    )


def test_default_since_is_wall_clock() -> None:
    before = time.time()
    since = Supervisor("s", [ChildSpec("a", Probe("a"))]).snapshot().child("a").since
    assert before <= since <= time.time()
