"""Assembles the aiohttp application: context, middlewares, route tables.

Middleware order (outermost first): ``tracking`` and the metrics counter see every request,
including the error envelopes ``errors`` produces for it, so its log line and the
``wadaemon_http_requests_total`` sample carry the final status.

Endpoint modules expose a ``routes`` table; new ones are added here (or passed as
``extra_routes``, which tests use for routes that exist only in tests).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from wadaemon.http import diag, metrics, operator_page, probes
from wadaemon.http.context import CONTEXT, HttpContext
from wadaemon.http.errors import error_middleware
from wadaemon.http.tracking import InFlightRequests


def build_app(
    context: HttpContext,
    in_flight: InFlightRequests,
    extra_routes: Iterable[web.AbstractRouteDef] = (),
) -> web.Application:
    app = web.Application(middlewares=[in_flight.middleware, metrics.count_requests, error_middleware])
    app[CONTEXT] = context
    app.add_routes(probes.routes)
    app.add_routes(diag.routes)
    app.add_routes(metrics.routes)
    app.add_routes(operator_page.routes)
    app.add_routes(list(extra_routes))
    return app
