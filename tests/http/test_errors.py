"""The JSON error envelope (middleware) and request logging."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web

from tests.http.conftest import Serve
from tests.http.fakes import fetch
from wadaemon.http.errors import ApiError

SECRET = "secret-message-text"

test_routes = web.RouteTableDef()


@test_routes.get("/test/boom")
async def boom(request: web.Request) -> web.Response:
    raise RuntimeError(SECRET)


@test_routes.get("/test/bad-limit")
async def bad_limit(request: web.Request) -> web.Response:
    raise ApiError(400, "bad_limit", "limit must be 1-500")


@test_routes.get("/test/aiohttp-forbidden")
async def forbidden(request: web.Request) -> web.Response:
    raise web.HTTPForbidden()


def test_unknown_route_is_json_404(serve: Serve) -> None:
    server = serve()

    reply = fetch(server.port, "/nope?token=abc")

    assert reply.status == 404
    assert reply.headers.get_content_type() == "application/json"
    assert reply.json == {"success": False,
                          "error": {"code": "not_found", "message": "no route for GET /nope"}}


def test_wrong_method_is_json_405_with_allow(serve: Serve) -> None:
    server = serve()

    reply = fetch(server.port, "/health", method="POST")

    assert reply.status == 405
    assert reply.json["success"] is False
    assert reply.json["error"]["code"] == "method_not_allowed"
    assert "GET" in (reply.headers["Allow"] or "")


def test_handler_exception_is_500_internal_logged_not_leaked(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(extra_routes=test_routes)

    with caplog.at_level(logging.ERROR, logger="wadaemon.http"):
        reply = fetch(server.port, "/test/boom")

    assert reply.status == 500
    assert reply.json == {"success": False,
                          "error": {"code": "internal", "message": "internal error"}}
    assert SECRET.encode() not in reply.raw and b"Traceback" not in reply.raw
    [record] = [r for r in caplog.records if r.name == "wadaemon.http"]
    assert record.exc_info is not None and SECRET in str(record.exc_info[1])
    assert "path=/test/boom" in record.getMessage()


def test_api_error_becomes_its_status_and_code(serve: Serve) -> None:
    server = serve(extra_routes=test_routes)

    reply = fetch(server.port, "/test/bad-limit")

    assert reply.status == 400
    assert reply.json == {"success": False,
                          "error": {"code": "bad_limit", "message": "limit must be 1-500"}}


def test_aiohttp_http_exception_gets_the_envelope(serve: Serve) -> None:
    server = serve(extra_routes=test_routes)

    reply = fetch(server.port, "/test/aiohttp-forbidden")

    assert reply.status == 403
    assert reply.json == {"success": False, "error": {"code": "forbidden", "message": "Forbidden"}}


def test_one_debug_line_per_request_and_no_access_log(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve()

    with caplog.at_level(logging.DEBUG):
        fetch(server.port, "/ready?token=abc")
        fetch(server.port, "/nope")

    lines = [r.getMessage() for r in caplog.records if r.name == "wadaemon.http"]
    assert [line.rsplit(" ", 1)[0] for line in lines] == ["http GET /ready -> 503",
                                                          "http GET /nope -> 404"]
    assert not any("token" in line for line in lines)
    assert not [r for r in caplog.records if r.name == "aiohttp.access"]
