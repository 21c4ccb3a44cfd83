"""What a handler may use, stored on the aiohttp application under ``CONTEXT``.

Handlers run on the HTTP thread, so everything here is safe to use from there: the status
board is read through ``snapshot()`` (a locked copy), the store only through the gateway
(worker threads with a timeout, or the store's reader that never waits), the daemon's actions only through ``control`` (the
``DaemonControl`` protocol). Nothing else of the daemon is reachable from a handler, by
construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from wadaemon.config import Settings
from wadaemon.http.auth import AuthConfig
from wadaemon.http.bridge import ActionBridge
from wadaemon.http.control import DaemonControl
from wadaemon.http.page_cache import PageCache
from wadaemon.http.ratelimit import RateLimiter
from wadaemon.http.store_access import StoreGateway
from wadaemon.metrics import Metrics
from wadaemon.status import DaemonStatus


@dataclass(frozen=True)
class HttpContext:
    status: DaemonStatus
    #: The probes' store gateway (fails at once when every slot is held).
    store: StoreGateway
    #: The API's store gateway (a request waits its turn within the store timeout).
    api_store: StoreGateway
    #: Runs trio functions in the daemon (tests use it directly; routes use ``control``).
    bridge: ActionBridge | None
    #: Wall-clock seconds since the epoch (``time.time``); injectable for tests.
    clock: Callable[[], float]
    #: The daemon's metrics registry (``GET /metrics``; the request counter).
    metrics: Metrics
    #: The daemon's configuration (read-only; the operator page words cooldowns with it).
    settings: Settings
    #: The daemon's actions (send, backfill); None: they answer 503.
    control: DaemonControl | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    #: Pages of the API kept while the store's marks say they are current.
    pages: PageCache = field(default_factory=PageCache)


CONTEXT = web.AppKey("wadaemon_http_context", HttpContext)
#: The OpenAPI document, built once per application from the route table.
OPENAPI = web.AppKey("wadaemon_openapi", dict[str, Any])


def context_of(request: web.Request) -> HttpContext:
    return request.app[CONTEXT]
