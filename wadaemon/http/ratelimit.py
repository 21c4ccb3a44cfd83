"""Per-credential rate limits on the routes that make WhatsApp or the store work hard.

A token bucket per (bucket name, principal): ``burst`` requests at once, refilled at
``per_minute`` a minute. Why a bucket and not a fixed window? A window lets twice the limit
through across its boundary; a bucket never exceeds ``burst`` plus the refill. Time comes from
an injected clock (seconds, ``time.monotonic`` by default), so tests move it by hand.

A refused request is ``429 too_many_requests`` with ``Retry-After``: the whole seconds until
one token is back. Buckets are kept in memory (a limit that resets on restart is fine: it
protects against a runaway client, it is not a quota); idle full buckets are forgotten so the
table stays as small as the set of active callers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from wadaemon.http.errors import ApiError


@dataclass(frozen=True)
class Limit:
    per_minute: float
    burst: int


#: Defaults: a person typing sends far below 30 a minute; a backfill is a long job.
DEFAULT_LIMITS: Mapping[str, Limit] = {
    "send": Limit(per_minute=30, burst=10),
    "backfill": Limit(per_minute=2, burst=3),
}


class RateLimited(ApiError):
    def __init__(self, bucket: str, retry_after_s: int) -> None:
        super().__init__(429, "too_many_requests",
                         f"too many {bucket} requests: retry in {retry_after_s}s",
                         {"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


class RateLimiter:
    """Used from the HTTP loop only (no locking)."""

    def __init__(self, limits: Mapping[str, Limit] = DEFAULT_LIMITS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = dict(limits)
        self.clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # -> (tokens, at)

    def take(self, bucket: str, principal: str) -> None:
        """Spend one token or raise ``RateLimited``. An unknown bucket is unlimited."""
        limit = self.limits.get(bucket)
        if limit is None:
            return
        now = self.clock()
        rate = limit.per_minute / 60.0
        tokens, at = self._buckets.get((bucket, principal), (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + max(now - at, 0.0) * rate)
        if tokens < 1.0:
            self._buckets[(bucket, principal)] = (tokens, now)
            raise RateLimited(bucket, max(1, math.ceil((1.0 - tokens) / rate)))
        self._buckets[(bucket, principal)] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        for key, (tokens, at) in list(self._buckets.items()):
            limit = self.limits[key[0]]
            if tokens + (now - at) * limit.per_minute / 60.0 >= limit.burst:
                del self._buckets[key]
