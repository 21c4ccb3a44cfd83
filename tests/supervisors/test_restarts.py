"""Restart types, strategies, restart intensity and backoff, on an autojumping MockClock."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from supervisors import (
    Backoff,
    ChildSpec,
    Intensity,
    RestartType,
    Supervisor,
    SupervisorEscalation,
)
from tests.supervisors.probes import Probe

LIMIT = 100_000  # seconds of mock time before a test counts as hung
NO_JITTER = Backoff(base_s=1.0, factor=2.0, max_s=5.0, jitter=0.0, reset_after_s=50.0)
LENIENT = Intensity(max_restarts=100, within_s=60.0)


def supervisor(*children: ChildSpec, **kwargs: object) -> Supervisor:
    kwargs.setdefault("backoff", NO_JITTER)
    kwargs.setdefault("intensity", LENIENT)
    return Supervisor("sup", children, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("restart", "plan", "expected_runs", "final_state"),
    [
        # permanent: restarted after failing and after returning
        ("permanent", ("fail", "return", "serve"), 3, "running"),
        # transient: restarted after failing, not after returning
        ("transient", ("fail", "return", "serve"), 2, "stopped"),
        # temporary: never restarted, not even after failing
        ("temporary", ("fail", "serve"), 1, "failed"),
    ],
)
async def test_restart_types(
    autojump_clock: trio.testing.MockClock,
    restart: RestartType,
    plan: tuple[str, ...],
    expected_runs: int,
    final_state: str,
) -> None:
    probe = Probe("w", *plan)
    sup = supervisor(ChildSpec("w", probe, restart=restart))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await probe.wait_runs(expected_runs)
            await trio.sleep(1000)  # ample time for any further (unwanted) restart
            assert len(probe.runs) == expected_runs
            child = sup.snapshot().child("w")
            assert child.state == final_state
            assert child.restarts == expected_runs - 1
            assert child.last_error == "Boom: w run 0"
            nursery.cancel_scope.cancel()


async def test_one_for_one_restarts_only_the_failed_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky, steady = Probe("flaky", ("fail", 3.0)), Probe("steady")
    sup = supervisor(ChildSpec("steady", steady), ChildSpec("flaky", flaky))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await flaky.wait_ups(2)
            assert flaky.runs == [0.0, 4.0]  # failed at 3, restarted 1s later
            assert steady.runs == [0.0] and steady.ends == []
            snap = sup.snapshot()
            assert snap.child("steady").restarts == 0
            assert snap.child("flaky").restarts == 1
            nursery.cancel_scope.cancel()


async def test_one_for_all_cancels_and_restarts_every_child_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal: list[str] = []
    generations: list[float] = []
    first = Probe("a", journal=journal)
    second = Probe("b", ("fail", 2.0), journal=journal)
    sup = supervisor(
        ChildSpec("a", first),
        ChildSpec("b", second),
        strategy="one_for_all",
        on_start=lambda: generations.append(trio.current_time()),
    )
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await second.wait_ups(2)
            assert journal == [
                "a:run", "a:up", "b:run", "b:up",
                "b:end",  # b fails at t=2...
                "a:end",  # ...so a is cancelled (its finally ran)...
                "a:run", "a:up", "b:run", "b:up",  # ...and both restart, in order, 1s later
            ]
            assert first.runs == [0.0, 3.0] and second.runs == [0.0, 3.0]
            assert generations == [0.0, 3.0]  # on_start runs before each generation
            snap = sup.snapshot()
            assert [(c.name, c.state, c.restarts) for c in snap.children] == [
                ("a", "running", 1),
                ("b", "running", 1),
            ]
            nursery.cancel_scope.cancel()


async def test_one_for_all_does_not_restart_temporary_siblings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    helper, failing = Probe("helper"), Probe("failing", ("fail", 1.0))
    sup = supervisor(
        ChildSpec("helper", helper, restart="temporary"),
        ChildSpec("failing", failing),
        strategy="one_for_all",
    )
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await failing.wait_ups(2)
            await trio.sleep(1000)
            assert helper.runs == [0.0] and helper.ends == [1.0]
            assert sup.snapshot().child("helper").state == "stopped"
            nursery.cancel_scope.cancel()


async def test_one_for_all_leaves_a_child_that_ended_for_good_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    done, other = Probe("done", ("return", 1.0)), Probe("other", ("fail", 5.0))
    sup = supervisor(
        ChildSpec("done", done, restart="transient"),
        ChildSpec("other", other),
        strategy="one_for_all",
    )
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await other.wait_ups(2)
            await trio.sleep(1000)
            # a transient child returning is no reason to restart its siblings (other was
            # not cancelled at t=1)...
            assert other.ends == [5.0] and other.runs == [0.0, 6.0]
            # ...and the group restart after other failed did not bring it back
            assert done.runs == [0.0]
            assert sup.snapshot().child("done").state == "stopped"
            nursery.cancel_scope.cancel()


async def test_one_for_all_restarts_a_generation_that_failed_while_starting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b, c = Probe("a"), Probe("b", ("fail_early", 1.0)), Probe("c")
    sup = supervisor(ChildSpec("a", a), ChildSpec("b", b), ChildSpec("c", c), strategy="one_for_all")
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert trio.current_time() == 2.0
            assert (a.runs, a.ends) == ([0.0, 2.0], [1.0])
            assert b.runs == [0.0, 2.0]
            assert c.runs == [2.0]  # never started by the superseded generation
            nursery.cancel_scope.cancel()


async def test_too_many_restarts_escalate_with_the_last_error_chained(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = Probe("w", default="fail")
    sup = supervisor(ChildSpec("w", probe), intensity=Intensity(max_restarts=2, within_s=60.0))
    with trio.fail_after(LIMIT), pytest.raises(SupervisorEscalation) as caught:
        await sup.run()
    escalation = caught.value
    assert probe.runs == [0.0, 1.0, 3.0]  # two restarts allowed, the third failure escalates
    assert escalation.__cause__ is probe.errors[-1]
    assert escalation.error is probe.errors[-1]
    assert (escalation.supervisor, escalation.child) == ("sup", "w")
    assert "more than 2 restarts within 60s" in str(escalation)
    assert "Boom: w run 2" in str(escalation)
    snap = sup.snapshot()
    assert snap.state == "failed"
    assert snap.last_error is not None and snap.last_error.startswith("SupervisorEscalation:")
    assert snap.child("w").state == "failed"
    assert snap.child("w").last_error == "Boom: w run 2"


@pytest.mark.parametrize(("uptime", "escalates"), [(20.0, False), (5.0, True)])
async def test_restarts_spread_beyond_the_window_do_not_escalate(
    autojump_clock: trio.testing.MockClock, uptime: float, escalates: bool
) -> None:
    probe = Probe("w", default=("fail", uptime))
    sup = supervisor(ChildSpec("w", probe), intensity=Intensity(max_restarts=1, within_s=10.0))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            if escalates:
                with pytest.raises(SupervisorEscalation):
                    await sup.run()
                assert len(probe.runs) == 2
            else:
                await nursery.start(sup.run)
                await probe.wait_runs(6)
                assert sup.snapshot().state == "running"
            nursery.cancel_scope.cancel()


async def test_backoff_grows_between_restarts_up_to_its_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = Probe("w", default="fail_early")
    sup = supervisor(ChildSpec("w", probe))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await probe.wait_runs(7)
            gaps = [b - a for a, b in zip(probe.runs, probe.runs[1:], strict=False)]
            assert gaps == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
            nursery.cancel_scope.cancel()


async def test_backoff_resets_after_a_stable_run(autojump_clock: trio.testing.MockClock) -> None:
    # fails at once twice, then stays up 60s (> reset_after_s=50) before failing again
    probe = Probe("w", "fail", "fail", ("fail", 60.0), "fail", "serve")
    sup = supervisor(ChildSpec("w", probe))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await probe.wait_ups(5)
            gaps = [b - a for a, b in zip(probe.runs, probe.runs[1:], strict=False)]
            assert gaps == [1.0, 2.0, 60.0 + 1.0, 2.0]
            nursery.cancel_scope.cancel()


async def test_one_for_all_backs_off_as_a_group(autojump_clock: trio.testing.MockClock) -> None:
    a, b = Probe("a", default=("fail", 1.0)), Probe("b")
    sup = supervisor(ChildSpec("a", a), ChildSpec("b", b), strategy="one_for_all")
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await b.wait_runs(4)
            # each generation lives 1s, then waits 1, 2, 4s before the next
            assert a.runs == [0.0, 2.0, 5.0, 10.0]
            assert b.runs == a.runs
            assert b.ends == [1.0, 3.0, 6.0]
            nursery.cancel_scope.cancel()


async def _restart_gaps(seed: int, backoff: Backoff) -> list[float]:
    probe = Probe("w", default="fail_early")
    sup = supervisor(ChildSpec("w", probe), backoff=backoff, rng=random.Random(seed))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        await probe.wait_runs(6)
        nursery.cancel_scope.cancel()
    return [b - a for a, b in zip(probe.runs, probe.runs[1:], strict=False)]


async def test_jitter_is_deterministic_with_an_injected_rng(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = Backoff(base_s=1.0, factor=2.0, max_s=100.0, jitter=0.5)
    with trio.fail_after(LIMIT):
        first = await _restart_gaps(7, backoff)
        second = await _restart_gaps(7, backoff)
        other = await _restart_gaps(8, backoff)
    rng = random.Random(7)
    expected = [backoff.delay(n, rng) for n in range(5)]
    assert first == pytest.approx(expected)
    assert second == pytest.approx(first)
    assert other != pytest.approx(first)
    assert first != pytest.approx([1.0, 2.0, 4.0, 8.0, 16.0])  # jitter was applied
    for n, gap in enumerate(first):
        assert 0.5 * 2.0**n <= gap <= 2.0**n


async def test_a_failure_is_logged_with_its_traceback(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    probe = Probe("w", "fail")
    sup = supervisor(ChildSpec("w", probe))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await probe.wait_ups(2)
            nursery.cancel_scope.cancel()
    [record] = [r for r in caplog.records if r.name == "supervisors"]
    assert "sup/w ended (Boom: w run 0); restarting in 1s" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is probe.errors[0]
