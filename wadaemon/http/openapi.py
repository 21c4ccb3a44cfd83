"""The OpenAPI 3.1 document, generated from the route table and the handlers' own Structs.

Nothing here is written by hand per route: paths, parameters, bodies and answers come from
``routing.Route`` and the msgspec Structs it names (``msgspec.json.schema_components``), so
the document describes exactly what is served. OpenAPI 3.1 uses JSON Schema 2020-12, which is
what msgspec emits; schemas are shared under ``components/schemas``.

Error answers are derived from the route: every non-open route can answer 401/403 (and 503
when the store or the daemon cannot answer in time); a route with parameters or a body 400; a
route under ``{accountId}`` 404; a body 413; a rate-limited route 429. All of them carry the
one error envelope, ``ErrorBody``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from wadaemon.http.errors import ErrorBody
from wadaemon.http.routing import Route

_REF = "#/components/schemas/{name}"

#: Account ids, thread ids and JIDs are short; the bound keeps a request line within what the
#: HTTP parser accepts (8190 bytes), so a client following the document never gets a parser
#: error instead of an answer.
MAX_PATH_PARAM = 128

_ERROR_TEXT = {
    400: "A parameter or the body is invalid (the message names it)",
    401: "No bearer token was given",
    403: "The token is wrong, the caller is not loopback (API_TOKEN unset), or admin is disabled",
    404: "Unknown account or thread",
    409: "The action conflicts with the account's state or this daemon's configuration",
    413: "The body is too large",
    429: "Rate limit reached (see Retry-After)",
    503: "The store or the daemon did not answer in time, or the feature is unavailable",
}

_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "open": [],
    "api": [{"apiToken": []}, {"adminToken": []}],
    "admin": [{"adminToken": []}],
}


def error_statuses(route: Route) -> list[int]:
    statuses = set(route.errors)
    if route.level != "open":
        statuses |= {401, 403, 503}
    if route.query or route.body is not None or route.path_params:
        statuses.add(400)
    if "accountId" in route.path_params:
        statuses.add(404)
    if route.body is not None:
        statuses.add(413)
    if route.rate_limit is not None:
        statuses.add(429)
    return sorted(statuses)


def build_document(routes: Sequence[Route], *, title: str = "wadaemon", version: str = "1") -> dict[str, Any]:
    types: list[Any] = [ErrorBody]
    for route in routes:
        types.extend(t for t in (route.response, route.body, *route.also.values()) if t is not None)
    unique = list(dict.fromkeys(types))
    schemas, components = msgspec.json.schema_components(unique, ref_template=_REF)
    schema_of = dict(zip(unique, schemas, strict=True))
    error_ref = schema_of[ErrorBody]

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schema_of, error_ref)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "wadaemon's HTTP API. Every error is "
                                "{success: false, error: {code, message}}; timestamps are ISO-8601 UTC."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiToken": {"type": "http", "scheme": "bearer",
                             "description": "API_TOKEN (data routes; loopback-only when unset)"},
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "ADMIN_TOKEN (admin routes; refused when unset)"},
            },
        },
    }


def _content(route: Route, schema: Any) -> dict[str, Any]:
    if schema is None:
        schema = {"type": "object"} if route.media_type == "application/json" else {"type": "string"}
    return {route.media_type: {"schema": schema}}


def _operation(route: Route, schema_of: dict[Any, Any], error_ref: Any) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": MAX_PATH_PARAM}}
        for name in route.path_params
    ]
    parameters += [
        {"name": p.name, "in": "query", "required": False, "description": p.description, "schema": p.schema}
        for p in route.query
    ]
    responses: dict[str, Any] = {
        str(route.status): {"description": route.summary,
                            "content": _content(route, schema_of.get(route.response))},
    }
    for status, kind in route.also.items():
        responses[str(status)] = {"description": f"{route.summary} (status {status})",
                                  "content": _content(route, schema_of.get(kind))}
    for status in error_statuses(route):
        responses.setdefault(str(status), {
            "description": _ERROR_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": error_ref}},
        })
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag] if route.tag else [],
        "parameters": parameters,
        "responses": responses,
        "security": _SECURITY[route.level],
    }
    if route.body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": schema_of[route.body]}}}
    return operation
