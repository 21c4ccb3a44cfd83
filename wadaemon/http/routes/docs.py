"""``GET /openapi.json``: the OpenAPI 3.1 document, built once per application from the
route table (``wadaemon.http.openapi``). Open: it describes the API, it holds no data."""

from __future__ import annotations

from aiohttp import web

from wadaemon.http.context import OPENAPI
from wadaemon.http.responses import json_response
from wadaemon.http.routing import RouteTable

routes = RouteTable("meta")


@routes.get("/openapi.json", level="open", response=None,
            summary="The OpenAPI 3.1 document of every route")
async def openapi_document(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])
