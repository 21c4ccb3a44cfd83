"""What a handler may use, stored on the aiohttp application under ``CONTEXT``.

Handlers run on the HTTP thread, so everything here is safe to use from there: the status
board is read through ``snapshot()`` (a locked copy), the store only through the gateway
(worker threads with a timeout), trio only through the bridge. Nothing else of the daemon is
reachable from a handler, by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from wadaemon.config import Settings
from wadaemon.http.bridge import ActionBridge
from wadaemon.http.store_access import StoreGateway
from wadaemon.metrics import Metrics
from wadaemon.status import DaemonStatus


@dataclass(frozen=True)
class HttpContext:
    status: DaemonStatus
    store: StoreGateway
    #: None until endpoints that act inside the daemon exist (and in tests without trio).
    bridge: ActionBridge | None
    #: Wall-clock seconds since the epoch (``time.time``); injectable for tests.
    clock: Callable[[], float]
    #: The daemon's metrics registry (``GET /metrics``; the request counter).
    metrics: Metrics
    #: The daemon's configuration (read-only; the operator page words cooldowns with it).
    settings: Settings


CONTEXT = web.AppKey("wadaemon_http_context", HttpContext)


def context_of(request: web.Request) -> HttpContext:
    return request.app[CONTEXT]
