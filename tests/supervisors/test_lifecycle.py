"""Start-up (``task_status`` semantics), shutdown, dynamic children and nesting."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from supervisors import (
    Backoff,
    ChildSpec,
    Intensity,
    Supervisor,
    SupervisorError,
    SupervisorEscalation,
)
from tests.supervisors.probes import Boom, Probe

LIMIT = 100_000
NO_JITTER = Backoff(base_s=1.0, factor=2.0, max_s=5.0, jitter=0.0)
LENIENT = Intensity(max_restarts=100, within_s=60.0)


def supervisor(name: str, *children: ChildSpec, **kwargs: object) -> Supervisor:
    kwargs.setdefault("backoff", NO_JITTER)
    kwargs.setdefault("intensity", LENIENT)
    return Supervisor(name, children, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ task_status


async def test_started_is_reported_once_every_child_started_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = Probe("a", start_delay=2.0), Probe("b", start_delay=3.0)
    sup = supervisor("sup", ChildSpec("a", first), ChildSpec("b", second))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            assert sup.snapshot().state == "stopped"
            await nursery.start(sup.run)
            assert trio.current_time() == 5.0
            assert second.runs == [2.0]  # b is only started once a reported started
            assert sup.snapshot().state == "running"
            nursery.cancel_scope.cancel()


async def test_started_waits_for_a_child_that_failed_while_starting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = Probe("w", ("fail_early", 2.0))
    sup = supervisor("sup", ChildSpec("w", probe))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert trio.current_time() == 3.0  # failed at 2, restarted after 1s
            assert probe.ups == [3.0]
            assert sup.snapshot().child("w").restarts == 1
            nursery.cancel_scope.cancel()


async def test_children_that_ended_for_good_do_not_hold_up_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    once, steady = Probe("once", "return_early"), Probe("steady")
    sup = supervisor(
        "sup", ChildSpec("once", once, restart="temporary"), ChildSpec("steady", steady)
    )
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert sup.snapshot().child("once").state == "stopped"
            nursery.cancel_scope.cancel()


async def test_a_child_that_never_reports_started_holds_up_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(*, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep_forever()

    sup = supervisor("sup", ChildSpec("silent", silent))
    reported: list[float] = []

    async def start_it() -> None:
        await nursery.start(sup.run)
        reported.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start_it)
        await trio.sleep(1000)
        assert reported == []
        snap = sup.snapshot()
        assert (snap.state, snap.child("silent").state) == ("starting", "starting")
        nursery.cancel_scope.cancel()


async def test_an_empty_supervisor_is_started_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = supervisor("empty")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert trio.current_time() == 0.0
        assert sup.snapshot().state == "running"
        nursery.cancel_scope.cancel()


async def test_escalating_before_started_fails_the_parents_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = Probe("w", default="fail_early")
    sup = supervisor("sup", ChildSpec("w", probe), intensity=Intensity(max_restarts=1))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            with pytest.raises(SupervisorEscalation) as caught:
                await nursery.start(sup.run)
    assert caught.value.__cause__ is probe.errors[-1]
    assert len(probe.runs) == 2


async def test_calling_started_twice_is_an_error(autojump_clock: trio.testing.MockClock) -> None:
    errors: list[RuntimeError] = []

    async def twice(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            task_status.started()
        except RuntimeError as exc:
            errors.append(exc)
        await trio.sleep_forever()

    sup = supervisor("sup", ChildSpec("twice", twice))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert len(errors) == 1
        nursery.cancel_scope.cancel()


async def test_on_start_failure_escalates(autojump_clock: trio.testing.MockClock) -> None:
    def broken() -> None:
        raise OSError("no channels")

    sup = supervisor("sup", ChildSpec("w", Probe("w")), on_start=broken)
    with trio.fail_after(LIMIT), pytest.raises(SupervisorEscalation, match="on_start failed") as caught:
        await sup.run()
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.child is None


async def test_a_running_supervisor_cannot_be_run_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = supervisor("sup", ChildSpec("w", Probe("w")))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with trio.fail_after(LIMIT), pytest.raises(SupervisorError, match="already running"):
            await sup.run()
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ shutdown


async def test_cancelling_the_supervisor_stops_children_cleanly_without_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    serving = Probe("serving")
    in_backoff = Probe("in_backoff", "fail")
    returned: list[float] = []

    async def stubborn(*, task_status: trio.TaskStatus[None]) -> None:
        """Swallows the cancellation and returns, as if its work were done."""
        task_status.started()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            returned.append(trio.current_time())

    async def noisy(*, task_status: trio.TaskStatus[None]) -> None:
        """Raises from its cleanup."""
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            raise Boom("cleanup failed")

    sup = supervisor(
        "sup",
        ChildSpec("serving", serving),
        ChildSpec("stubborn", stubborn),
        ChildSpec("noisy", noisy),
        ChildSpec("in_backoff", in_backoff),
        backoff=Backoff(base_s=100.0, max_s=100.0, jitter=0.0),
    )
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await in_backoff.wait_ends(1)
            await trio.sleep(10)  # in_backoff now waits 100s to be restarted
            assert sup.snapshot().child("in_backoff").state == "backoff"
            nursery.cancel_scope.cancel()
        assert nursery.cancel_scope.cancelled_caught  # run ended with Cancelled
        await trio.sleep(1000)
    assert serving.ends == [10.0]  # its finally ran, at the moment of cancellation
    assert returned == [10.0]
    assert len(serving.runs) == 1 and len(in_backoff.runs) == 1  # nothing restarted
    snap = sup.snapshot()
    assert snap.state == "stopped"
    assert {c.name: c.state for c in snap.children} == {
        "serving": "stopped",
        "stubborn": "stopped",
        "noisy": "failed",
        "in_backoff": "stopped",
    }
    assert {c.name: c.restarts for c in snap.children} == dict.fromkeys(
        ("serving", "stubborn", "noisy", "in_backoff"), 0
    )
    assert snap.child("serving").last_error is None  # Cancelled is not a failure
    assert snap.child("noisy").last_error == "Boom: cleanup failed"


async def test_a_stopped_supervisor_can_run_again(autojump_clock: trio.testing.MockClock) -> None:
    probe = Probe("w")
    sup = supervisor("sup", ChildSpec("w", probe))
    for _ in range(2):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            nursery.cancel_scope.cancel()
    assert len(probe.runs) == 2 and len(probe.ends) == 2
    assert sup.snapshot().restarts == 1


# ------------------------------------------------------------------ dynamic children


async def test_start_child_returns_once_the_child_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = supervisor("accounts")
    late = Probe("late", "fail", start_delay=3.0)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.start_child(ChildSpec("account:1", late))
            assert trio.current_time() == 3.0 and late.ups == [3.0]
            assert [c.name for c in sup.snapshot().children] == ["account:1"]
            # supervised like any other child: it failed at once, and is restarted
            await late.wait_ups(2)
            assert late.runs == [0.0, 4.0]
            with pytest.raises(ValueError, match="already has a child"):
                await sup.start_child(ChildSpec("account:1", Probe("dup")))
            nursery.cancel_scope.cancel()


async def test_start_child_reports_a_child_that_ended_before_starting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = supervisor("sup")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(SupervisorError, match=r"ended before.*Boom: x run 0"):
            await sup.start_child(ChildSpec("x", Probe("x", "fail_early"), restart="temporary"))
        # its name can be reused once it ended for good
        await sup.start_child(ChildSpec("x", Probe("x")))
        assert sup.snapshot().child("x").state == "running"
        nursery.cancel_scope.cancel()


async def test_start_child_needs_a_running_supervisor() -> None:
    with pytest.raises(SupervisorError, match="not running"):
        await supervisor("sup").start_child(ChildSpec("x", Probe("x")))


async def test_stop_child_cancels_it_and_never_restarts_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    keep, drop = Probe("keep"), Probe("drop")
    sup = supervisor("sup", ChildSpec("keep", keep), ChildSpec("drop", drop))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(5)
            await sup.stop_child("drop")
            assert drop.ends == [5.0]  # its finally ran before stop_child returned
            await trio.sleep(1000)
            assert len(drop.runs) == 1
            assert keep.ends == []
            assert [c.name for c in sup.snapshot().children] == ["keep"]
            with pytest.raises(KeyError):
                await sup.stop_child("drop")
            nursery.cancel_scope.cancel()


async def test_stop_child_cancels_a_pending_restart(autojump_clock: trio.testing.MockClock) -> None:
    flaky = Probe("flaky", "fail")
    sup = supervisor(
        "sup", ChildSpec("flaky", flaky), backoff=Backoff(base_s=50.0, max_s=50.0, jitter=0.0)
    )
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await flaky.wait_ends(1)
            await sup.stop_child("flaky")
            await trio.sleep(1000)
            assert len(flaky.runs) == 1
            nursery.cancel_scope.cancel()


async def test_dynamic_children_are_started_again_when_the_supervisor_reruns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = Probe("dyn")
    sup = supervisor("sup")
    for _ in range(2):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            if not probe.runs:
                await sup.start_child(ChildSpec("dyn", probe))
            nursery.cancel_scope.cancel()
    assert len(probe.runs) == 2 and len(probe.ends) == 2


# ------------------------------------------------------------------ nesting


async def test_a_nested_escalation_is_a_child_failure_of_the_parent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = Probe("w", default="fail")
    inner = supervisor("inner", ChildSpec("w", worker), intensity=Intensity(max_restarts=0))
    outer = supervisor(
        "outer", ChildSpec("inner", inner.run), intensity=Intensity(max_restarts=2, within_s=60)
    )
    with trio.fail_after(LIMIT), pytest.raises(SupervisorEscalation) as caught:
        await outer.run()
    escalation = caught.value
    assert (escalation.supervisor, escalation.child) == ("outer", "inner")
    inner_escalation = escalation.__cause__
    assert isinstance(inner_escalation, SupervisorEscalation)
    assert inner_escalation.supervisor == "inner"
    assert inner_escalation.__cause__ is worker.errors[-1]
    assert worker.runs == [0.0, 1.0, 3.0]  # the outer supervisor restarted inner twice
    snap = outer.snapshot()
    node = snap.child("inner")
    assert (node.kind, node.state, node.restarts) == ("supervisor", "failed", 2)
    assert node.last_error is not None
    assert node.last_error.startswith("SupervisorEscalation: supervisor 'inner' gave up")
    assert node.child("w").state == "failed"


async def test_a_nested_supervisor_reports_started_when_its_subtree_is_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    deep = Probe("deep", start_delay=4.0)
    inner = supervisor("inner", ChildSpec("deep", deep))
    after = Probe("after")
    outer = supervisor("outer", ChildSpec("inner", inner.run), ChildSpec("after", after))
    async with trio.open_nursery() as nursery:
        await nursery.start(outer.run)
        assert trio.current_time() == 4.0
        assert after.runs == [4.0]  # started after the whole inner subtree was up
        nursery.cancel_scope.cancel()
