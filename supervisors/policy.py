"""Restart policy: how often a supervisor may restart (intensity) and how long it waits
before each restart (backoff). Pure values and arithmetic, so they are tested without trio.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Intensity:
    """More than ``max_restarts`` restarts within ``within_s`` seconds means restarting does
    not help (a bad config, a dead dependency): the supervisor stops trying and fails
    upward, so that the problem is handled — or made visible — one level higher."""

    max_restarts: int = 5
    within_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        if self.within_s <= 0:
            raise ValueError("within_s must be > 0")


class RestartWindow:
    """Sliding record of recent restart times, one per supervisor run."""

    def __init__(self, intensity: Intensity) -> None:
        self._intensity = intensity
        self._times: deque[float] = deque()

    def admit(self, now: float) -> bool:
        """Record a restart at ``now`` and return True, or return False (recording nothing)
        if it would be one restart too many within the window."""
        horizon = now - self._intensity.within_s
        while self._times and self._times[0] <= horizon:
            self._times.popleft()
        if len(self._times) >= self._intensity.max_restarts:
            return False
        self._times.append(now)
        return True


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before a restart: ``base_s * factor**attempt``, capped at ``max_s``, then
    scaled down by a random factor in ``[1 - jitter, 1]``.

    Backing off keeps a crashing child from hammering whatever it crashes on; jitter keeps
    many children that failed together (e.g. every account when the network drops) from
    retrying in lockstep. Jitter only ever shortens a delay, so delays never exceed
    ``max_s`` and keep growing as long as ``factor * (1 - jitter) > 1``.

    ``attempt`` counts consecutive restarts; it goes back to 0 once the child (for
    ``one_for_all``: the group) stayed up for ``reset_after_s`` before failing again.
    """

    base_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.1
    reset_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.base_s < 0:
            raise ValueError("base_s must be >= 0")
        if self.factor < 1:
            raise ValueError("factor must be >= 1")
        if self.max_s < self.base_s:
            raise ValueError("max_s must be >= base_s")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")
        if self.reset_after_s < 0:
            raise ValueError("reset_after_s must be >= 0")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before restart number ``attempt`` (0-based). Draws from ``rng``
        only when ``jitter`` is non-zero."""
        try:
            raw = self.base_s * self.factor**attempt
        except OverflowError:
            raw = self.max_s
        capped = min(raw, self.max_s)
        if self.jitter:
            capped *= rng.uniform(1.0 - self.jitter, 1.0)
        return capped
