"""Supervisor tests run on trio's MockClock: with ``autojump_threshold=0`` time jumps to the
next deadline as soon as every task is blocked, so backoff delays cost nothing and every
timestamp is exact. pytest-trio uses any ``Clock`` passed to the test as the run's clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)
