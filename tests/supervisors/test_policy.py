"""Restart policy arithmetic, spec validation and error formatting (no trio needed)."""

from __future__ import annotations

import random

import pytest

from supervisors import (
    Backoff,
    ChildSpec,
    Intensity,
    RestartWindow,
    Supervisor,
    SupervisorEscalation,
    describe_error,
)
from tests.supervisors.probes import Probe


def test_backoff_without_jitter_is_exponential_and_capped() -> None:
    backoff = Backoff(base_s=0.5, factor=3.0, max_s=10.0, jitter=0.0)
    rng = random.Random(0)
    assert [backoff.delay(n, rng) for n in range(5)] == [0.5, 1.5, 4.5, 10.0, 10.0]


def test_backoff_survives_huge_attempt_counts() -> None:
    backoff = Backoff(base_s=1.0, factor=2.0, max_s=30.0, jitter=0.0)
    assert backoff.delay(5000, random.Random(0)) == 30.0


def test_backoff_jitter_only_shortens_and_is_reproducible() -> None:
    backoff = Backoff(base_s=1.0, factor=2.0, max_s=8.0, jitter=0.25)
    first = [backoff.delay(n, random.Random(42)) for n in range(6)]
    again = [backoff.delay(n, random.Random(42)) for n in range(6)]
    assert first == again
    for n, delay in enumerate(first):
        raw = min(2.0**n, 8.0)
        assert 0.75 * raw <= delay <= raw
    assert first != [min(2.0**n, 8.0) for n in range(6)]


def test_backoff_without_jitter_draws_nothing() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    Backoff(jitter=0.0).delay(2, rng)
    assert rng.getstate() == state


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_s": -1.0},
        {"factor": 0.5},
        {"base_s": 5.0, "max_s": 1.0},
        {"jitter": 1.5},
        {"jitter": -0.1},
        {"reset_after_s": -1.0},
    ],
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


@pytest.mark.parametrize("kwargs", [{"max_restarts": -1}, {"within_s": 0.0}])
def test_intensity_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Intensity(**kwargs)  # type: ignore[arg-type]


def test_restart_window_admits_max_restarts_within_the_window() -> None:
    window = RestartWindow(Intensity(max_restarts=2, within_s=10.0))
    assert window.admit(0.0)
    assert window.admit(1.0)
    assert not window.admit(2.0)  # a third restart within 10s is one too many
    assert not window.admit(9.9)  # refused restarts are not recorded...
    assert window.admit(10.0)  # ...and the one at t=0 has left the window
    assert not window.admit(10.5)


def test_restart_window_with_zero_restarts_refuses_everything() -> None:
    assert not RestartWindow(Intensity(max_restarts=0)).admit(0.0)


def test_child_spec_validates_name_and_restart_type() -> None:
    with pytest.raises(ValueError):
        ChildSpec("", Probe("x"))
    with pytest.raises(ValueError):
        ChildSpec("x", Probe("x"), restart="sometimes")  # type: ignore[arg-type]
    assert ChildSpec("x", Probe("x")).restart == "permanent"


def test_supervisor_rejects_duplicate_names_and_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Supervisor("s", [ChildSpec("x", Probe("x")), ChildSpec("x", Probe("y"))])
    with pytest.raises(ValueError, match="strategy"):
        Supervisor("s", [], strategy="rest_for_one")  # type: ignore[arg-type]


def test_describe_error_is_short_and_single_line() -> None:
    assert describe_error(ValueError("bad\n  thing")) == "ValueError: bad thing"
    assert describe_error(KeyError()) == "KeyError"
    long = describe_error(RuntimeError("x" * 1000))
    assert long.startswith("RuntimeError: xxx") and len(long) == 200


def test_escalation_message_names_supervisor_child_and_error() -> None:
    cause = ValueError("db down")
    escalation = SupervisorEscalation("accounts", "account:1", cause, "too many restarts")
    assert str(escalation) == (
        "supervisor 'accounts' gave up: too many restarts; last failure in child "
        "'account:1': ValueError: db down"
    )
    assert escalation.error is cause and escalation.child == "account:1"
