"""The error envelope every endpoint shares: ``{success: false, error: {code, message}}``.

It is a middleware so each handler, present or future, gets it without thinking:

* ``ApiError(status, code, message)`` raised by a handler becomes that status and envelope
  (bad input is a 4xx here, never a 500 — the HTTP contract);
* aiohttp's own ``HTTPException``s ≥ 400 (the router's 404 for an unknown route, 405 for a
  known route with the wrong method, 413, …) get the same envelope instead of aiohttp's
  text/plain page; a 405 keeps its ``Allow`` header;
* any other exception is a bug: it is logged with its traceback and answered
  ``500 internal`` with a fixed message — a stack trace or exception text never reaches the
  body (it could carry message text or tokens).

``asyncio.CancelledError`` (client went away, server stopping) is not an ``Exception`` and
passes through untouched, as aiohttp expects.
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from wadaemon.http.responses import json_response

log = logging.getLogger("wadaemon.http")

#: Error codes for aiohttp's HTTP exceptions; other statuses get ``http_<status>``.
_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """Raise from a handler to answer ``status`` with ``{success: false, error: {code, message}}``.

    ``message`` goes to the client as is: keep it free of message text and secrets.
    """

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        #: Extra response headers (``WWW-Authenticate`` on a 401, ``Retry-After`` on a 429).
        self.headers = dict(headers or {})


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    error: ErrorDetail
    success: bool = False


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response(ErrorBody(error=ErrorDetail(code=code, message=message)), status=status)


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    status = exc.status
    if isinstance(exc, web.HTTPNotFound):
        message = f"no route for {request.method} {request.path}"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        message = f"{request.method} is not allowed on {request.path}"
    else:
        message = exc.reason
    response = error_response(status, _CODES.get(status, f"http_{status}"), message)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message)
        response.headers.update(exc.headers)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            raise
        return _from_http_exception(request, exc)
    except Exception:
        log.exception("http handler failed method=%s path=%s", request.method, request.path)
        return error_response(500, "internal", "internal error")
