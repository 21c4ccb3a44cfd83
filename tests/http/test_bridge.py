"""ActionBridge: trio functions run inside the trio run, called from the HTTP loop."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio
from aiohttp import web

from tests.http.fakes import FakeStore, fetch
from wadaemon.http.bridge import ActionBridge, DaemonUnavailable
from wadaemon.http.context import context_of
from wadaemon.http.server import HttpServer, serve_http
from wadaemon.status import DaemonStatus


async def test_call_runs_the_function_in_the_trio_thread() -> None:
    bridge = ActionBridge.current()
    trio_thread = threading.get_ident()
    seen: list[int] = []

    async def add(a: int, b: int) -> int:
        await trio.lowlevel.checkpoint()  # a real trio await: only possible inside the run
        seen.append(threading.get_ident())
        return a + b

    def from_an_asyncio_loop() -> int:
        return asyncio.run(bridge.call(add, 2, 3))

    assert await trio.to_thread.run_sync(from_an_asyncio_loop) == 5
    assert seen == [trio_thread]


async def test_call_propagates_the_functions_exception() -> None:
    bridge = ActionBridge.current()

    async def fail() -> None:
        raise ValueError("no such account")

    def from_an_asyncio_loop() -> None:
        asyncio.run(bridge.call(fail))

    with pytest.raises(ValueError, match="no such account"):
        await trio.to_thread.run_sync(from_an_asyncio_loop)


async def test_handler_acts_inside_trio_through_the_bridge(board: DaemonStatus) -> None:
    """A route (test-only) sends on a trio memory channel: a trio-only action."""
    send, receive = trio.open_memory_channel[str](1)
    routes = web.RouteTableDef()

    async def enqueue(account_id: str) -> int:
        await send.send(account_id)
        return 202

    @routes.post("/test/backfill/{account_id}")
    async def backfill(request: web.Request) -> web.Response:
        bridge = context_of(request).bridge
        assert bridge is not None
        status = await bridge.call(enqueue, request.match_info["account_id"])
        return web.json_response({"success": True}, status=status)

    server = HttpServer("127.0.0.1", 0, board, FakeStore().as_store(), ActionBridge.current(),
                        extra_routes=routes)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_http, server)
        reply = await trio.to_thread.run_sync(fetch, server.port, "/test/backfill/acc1", "POST")
        assert reply.status == 202
        assert receive.receive_nowait() == "acc1"
        nursery.cancel_scope.cancel()


def test_bridge_to_a_finished_run_is_503_unavailable(board: DaemonStatus) -> None:
    async def token() -> trio.lowlevel.TrioToken:
        return trio.lowlevel.current_trio_token()

    bridge = ActionBridge(trio.run(token))

    async def never_runs() -> None:
        raise AssertionError("the run is over")

    with pytest.raises(DaemonUnavailable):
        asyncio.run(bridge.call(never_runs))

    routes = web.RouteTableDef()

    @routes.post("/test/act")
    async def act(request: web.Request) -> web.Response:
        await bridge.call(never_runs)
        return web.json_response({})

    server = HttpServer("127.0.0.1", 0, board, FakeStore().as_store(), bridge, extra_routes=routes)
    server.start()
    try:
        reply = fetch(server.port, "/test/act", "POST")
    finally:
        server.stop(1.0)
    assert reply.status == 503
    assert reply.json == {"success": False,
                          "error": {"code": "unavailable", "message": "the daemon is not running"}}
