"""``GET /health`` (liveness) and ``GET /ready`` (readiness).

/health answers 200 whenever the HTTP thread is alive — that *is* the liveness signal — and
says ``degraded`` when the store does not answer a ping within the store timeout, or when an
account needs an operator (``reasons``: a pipeline in a restart loop, events held because the
journal refuses appends, a quarantined journal; ``wadaemon.status.health_problems``): a store
outage is something to see, not a reason for a supervisor (systemd, k8s) to restart us, since
the daemon keeps ingesting into its journal and catches up when the store returns.

/ready reflects the daemon's mode on the status board only (no store call): 200 while serving
(``active``: this instance runs accounts; ``passive``: it runs none), 503 while ``starting`` or
``stopping`` so a load balancer drains us before shutdown.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from wadaemon.http.context import context_of
from wadaemon.http.responses import json_response
from wadaemon.http.routing import RouteTable
from wadaemon.status import Mode, health_problems

routes = RouteTable("probes")


class StoreHealth(msgspec.Struct, rename="camel"):
    status: Literal["ok", "down"]
    backend: str


class HealthBody(msgspec.Struct, rename="camel"):
    status: Literal["ok", "degraded"]
    store: StoreHealth
    #: Whole seconds since the daemon started (``DaemonStatus.started_at_ms``).
    uptime_s: int
    #: Why it is degraded besides the store (``wadaemon.status.health_problems``).
    reasons: list[str] = []


class ReadyBody(msgspec.Struct, rename="camel"):
    ready: bool
    mode: Mode
    instance_id: str


@routes.get("/health", level="open", response=HealthBody,
             summary="Liveness: 200 while the HTTP thread lives; degraded when the store does not answer")
async def health(request: web.Request) -> web.Response:
    context = context_of(request)
    store_ok = await context.store.reachable()
    now_ms = int(context.clock() * 1000)
    uptime_ms = now_ms - context.status.started_at_ms
    reasons = health_problems(context.status.snapshot().accounts, now_ms)
    return json_response(HealthBody(
        status="ok" if store_ok and not reasons else "degraded",
        store=StoreHealth(status="ok" if store_ok else "down", backend=context.store.backend),
        uptime_s=max(uptime_ms, 0) // 1000,
        reasons=reasons,
    ))


@routes.get("/ready", level="open", response=ReadyBody, also={503: ReadyBody},
             summary="Readiness: 200 while serving, 503 while starting or stopping")
async def ready(request: web.Request) -> web.Response:
    snapshot = context_of(request).status.snapshot()
    body = ReadyBody(ready=snapshot.ready, mode=snapshot.mode, instance_id=snapshot.instance_id)
    return json_response(body, status=200 if snapshot.ready else 503)
