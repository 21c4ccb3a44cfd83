"""Assembles the aiohttp application: context, middlewares, the route table.

Middleware order (outermost first): ``tracking`` and the metrics counter see every request,
including the error envelopes ``errors`` produces for it, so its log line and the
``wadaemon_http_requests_total`` sample carry the final status; ``errors`` wraps ``auth``, so
a refusal gets the same envelope as any other error.

Every endpoint is declared in a ``RouteTable`` (``wadaemon.http.routing``) of one module,
listed once in ``ROUTE_TABLES`` below: that list feeds aiohttp's router, the auth middleware
(each route's level) and the OpenAPI document (``GET /openapi.json``). A new group of routes
is a module in ``wadaemon/http/routes/`` plus one line here. ``extra_routes`` (plain aiohttp
route definitions, open, not in the document) exist for tests only.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from wadaemon.http import diag, metrics, operator_page, probes
from wadaemon.http.auth import auth_middleware
from wadaemon.http.context import CONTEXT, OPENAPI, HttpContext
from wadaemon.http.errors import error_middleware
from wadaemon.http.openapi import build_document
from wadaemon.http.routes import accounts, backfill, docs, messages, send, status
from wadaemon.http.routing import MAX_BODY_BYTES, Route, RouteTable
from wadaemon.http.tracking import InFlightRequests

ROUTE_TABLES: tuple[RouteTable, ...] = (
    probes.routes,
    diag.routes,
    metrics.routes,
    operator_page.routes,
    accounts.routes,
    messages.routes,
    send.routes,
    backfill.routes,
    status.routes,
    docs.routes,
)


def all_routes() -> list[Route]:
    return [route for table in ROUTE_TABLES for route in table.routes]


def build_app(
    context: HttpContext,
    in_flight: InFlightRequests,
    extra_routes: Iterable[web.AbstractRouteDef] = (),
) -> web.Application:
    declared = all_routes()
    by_aiohttp: dict[web.AbstractRoute, Route] = {}
    app = web.Application(
        middlewares=[in_flight.middleware, metrics.count_requests, error_middleware,
                     auth_middleware(by_aiohttp, context.auth, context.limiter)],
        client_max_size=MAX_BODY_BYTES,
    )
    app[CONTEXT] = context
    app[OPENAPI] = build_document(declared)
    for route in declared:
        by_aiohttp[app.router.add_route(route.method, route.path, route.handler)] = route
    app.add_routes(list(extra_routes))
    return app
