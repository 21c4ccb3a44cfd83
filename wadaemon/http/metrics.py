"""``GET /metrics`` (Prometheus text format, open like the probes) and the middleware that
counts every answered request by route *pattern* and status.

The route label is the pattern aiohttp matched (``/api/whatsapp/threads/{accountId}``), never
the concrete path, and ``unmatched`` for anything no route matched: a scanner trying random
URLs must not create a series per URL. The middleware sits outside the error middleware, so
the error envelopes it produces are counted with their final status.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from wadaemon.http.context import context_of
from wadaemon.http.routing import RouteTable

routes = RouteTable("probes")


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    status = 500  # an exception the error middleware let through (cancellation)
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        context_of(request).metrics.http_requests.labels(route_label(request), str(status)).inc()


@routes.get("/metrics", level="open", response=None, media_type="text/plain",
             summary="Prometheus metrics (text exposition format; OpenMetrics on request)")
async def metrics(request: web.Request) -> web.Response:
    body, content_type = context_of(request).metrics.exposition(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})
