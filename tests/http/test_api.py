"""The API routes on a real SQLite store: auth by level, parameter errors, cursor paging,
threads by alias, store outage, rate limits, the OpenAPI document."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from tests.http.conftest import Serve
from tests.http.fakes import FakeStore, Reply
from tests.store.builders import ACCOUNT, PEER, PEER_LID, T0, message, receipt, summary
from wadaemon.domain import AccountDoc, thread_id_for
from wadaemon.http.app import all_routes
from wadaemon.http.auth import AuthConfig, peer_is_loopback
from wadaemon.http.control import BackfillStart, SendOutcome
from wadaemon.http.ratelimit import Limit, RateLimiter
from wadaemon.http.server import HttpServer
from wadaemon.status import DaemonStatus
from wadaemon.store.sqlite import SqliteStore

API = "api-token-1234567890"
ADMIN = "admin-token-0987654321"


def call(port: int, path: str, method: str = "GET", *, token: str | None = None,
         body: Any = None, raw: bytes | None = None, host: str = "127.0.0.1",
         headers: dict[str, str] | None = None) -> Reply:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if payload is not None:
        sent["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=payload, headers=sent)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


class FakeControl:
    def __init__(self) -> None:
        self.sends: list[tuple[str, str, str, str | None]] = []
        self.backfills: list[str] = []

    async def send_text(self, account_id: str, to: str, text: str, client_message_id: str | None) -> SendOutcome:
        self.sends.append((account_id, to, text, client_message_id))
        return SendOutcome(message_id="WA1", status="sent", thread_id=f"{account_id}__{to}")

    async def trigger_backfill(self, account_id: str) -> BackfillStart:
        self.backfills.append(account_id)
        return BackfillStart(started=len(self.backfills) == 1)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "api.sqlite")
    store.upsert_messages([message(f"m{n:03d}", ts_ms=T0 + n) for n in range(120)])
    store.upsert_messages([message("lid-1", ts_ms=T0 - 5, client_jid=PEER_LID)])
    store.advance_threads([summary(T0 + 119), summary(T0 - 5, client_jid=PEER_LID)])
    store.merge_threads(ACCOUNT, PEER_LID, PEER)
    store.advance_threads([summary(T0 + n, client_jid=f"4072000{n:04d}@s.whatsapp.net") for n in range(30)])
    store.update_account(ACCOUNT, AccountDoc(state="connected", owner_instance="inst-1",
                                             phone_jid="40799999999@s.whatsapp.net"))
    store.update_account("elsewhere", AccountDoc(state="connected", owner_instance="inst-9"))
    yield store
    store.close()


@pytest.fixture
def api(serve: Serve, sqlite_store: SqliteStore, board: DaemonStatus) -> Any:
    board.account(ACCOUNT).state = "connected"
    control = FakeControl()

    def start(**overrides: Any) -> Any:
        options: dict[str, Any] = {"store": sqlite_store, "control": control,
                                   "auth": AuthConfig(api_token=API, admin_token=ADMIN)}
        options.update(overrides)
        server: Any = serve(**options)  # carries its FakeControl along for the tests
        server.fake_control = control
        return server

    return start


# -- auth ---------------------------------------------------------------------------------------

def test_data_routes_need_the_token(api: Any) -> None:
    port = api().port
    missing = call(port, f"/api/whatsapp/threads/{ACCOUNT}")
    wrong = call(port, f"/api/whatsapp/threads/{ACCOUNT}", token="not-it")
    right = call(port, f"/api/whatsapp/threads/{ACCOUNT}", token=API)
    admin_too = call(port, f"/api/whatsapp/threads/{ACCOUNT}", token=ADMIN)
    assert missing.status == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json["error"]["code"] == "unauthorized"
    assert wrong.status == 403 and "not-it" not in wrong.raw.decode()
    assert right.status == 200 and admin_too.status == 200


def test_admin_routes_want_the_admin_token_and_are_off_without_one(api: Any) -> None:
    port = api().port
    path = f"/api/admin/backfill/{ACCOUNT}/status"
    assert call(port, path).status == 401
    assert call(port, path, token=API).status == 403
    assert call(port, path, token=ADMIN).status == 200
    off = api(auth=AuthConfig(api_token=API)).port
    refused = call(off, path, token=ADMIN)
    assert refused.status == 403 and refused.json["error"]["code"] == "admin_disabled"
    assert call(off, path).status == 403


def test_probes_and_the_document_stay_open(api: Any) -> None:
    port = api().port
    for path in ("/health", "/ready", "/diag", "/openapi.json"):
        assert call(port, path).status in (200, 503), path


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a source address
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_without_api_token_only_loopback_peers_are_served(api: Any) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    started = api()  # for the store and control; this second server binds every address
    local = HttpServer("0.0.0.0", 0, started.status, started.store, auth=AuthConfig(),
                       control=started.control, store_timeout=1.0)
    local.start()
    try:
        path = f"/api/whatsapp/threads/{ACCOUNT}"
        assert call(local.port, path).status == 200
        remote = call(local.port, path, host=address, headers={"X-Forwarded-For": "127.0.0.1",
                                                               "Forwarded": "for=127.0.0.1"})
        assert remote.status == 403 and remote.json["error"]["code"] == "forbidden"
        assert call(local.port, "/health", host=address).status == 200
    finally:
        assert local.stop(5.0)


@pytest.mark.parametrize(("peer", "loopback"), [
    (("127.0.0.1", 1), True), (("127.9.8.7", 1), True), (("::1", 1, 0, 0), True),
    (("::ffff:127.0.0.1", 1, 0, 0), True), (("10.0.0.5", 1), False), (("192.0.2.7", 1), False),
    (("::ffff:10.0.0.5", 1, 0, 0), False), ("", False), (None, False),
])
def test_peer_is_loopback_reads_the_tcp_peer_only(peer: Any, loopback: bool) -> None:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: peer if name == "peername" else default
    request = make_mocked_request("GET", "/", headers={"X-Forwarded-For": "127.0.0.1"}, transport=transport)
    assert peer_is_loopback(request) is loopback


# -- parameters and errors ------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "named"), [
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=abc", "limit"), ("limit=1&limit=2", "limit"),
    ("orderBy=sideways", "orderBy"), ("before=%%%", "before"), ("before=bm90LWEtY3Vyc29y", "before"),
])
def test_bad_parameters_are_400_naming_them(api: Any, query: str, named: str) -> None:
    port = api().port
    for path in (f"/api/whatsapp/threads/{ACCOUNT}", f"/api/whatsapp/messages/{ACCOUNT}/{PEER}"):
        reply = call(port, f"{path}?{query}", token=API)
        assert reply.status == 400, (path, query, reply.json)
        assert reply.json["error"]["code"] == "bad_parameter"
        assert reply.json["error"]["message"].startswith(named)


def test_unknown_account_and_thread_are_404(api: Any) -> None:
    port = api().port
    assert call(port, "/api/whatsapp/threads/nobody", token=API).json["error"]["code"] == "account_not_found"
    reply = call(port, f"/api/whatsapp/messages/{ACCOUNT}/40700000000@s.whatsapp.net", token=API)
    assert reply.status == 404 and reply.json["error"]["code"] == "thread_not_found"


def test_bodies_wrong_methods_and_sizes(api: Any) -> None:
    port = api().port
    path = f"/api/whatsapp/send/{ACCOUNT}"
    assert call(port, path, "GET", token=API).status == 405
    assert call(port, path, "POST", token=API, raw=b"{nope").json["error"]["code"] == "bad_body"
    missing = call(port, path, "POST", token=API, body={"to": PEER})
    assert missing.status == 400 and "text" in missing.json["error"]["message"]
    assert call(port, path, "POST", token=API, body={"to": PEER, "text": "x" * 5000}).status == 400
    assert call(port, path, "POST", token=API, raw=b'{"to": "x", "text": "' + b"y" * 100_000 + b'"}').status == 413
    assert call(port, path, "POST", token=API, body=[1, 2]).status == 400


def test_store_outage_answers_503_quickly_and_probes_keep_answering(serve: Serve, board: DaemonStatus) -> None:
    store = FakeStore()
    store.hang_reads = True
    server = serve(store=store, auth=AuthConfig(api_token=API))
    reply = call(server.port, "/api/whatsapp/accounts", token=API)
    assert reply.status == 503 and reply.json["error"]["code"] == "store_unavailable"
    assert call(server.port, "/ready").status in (200, 503)


def test_sqlite_pages_are_read_without_waiting_for_a_write_in_progress(api: Any, sqlite_store: SqliteStore) -> None:
    """A write of the store in progress holds its connection's lock; the API reads through
    the store's local reader (WAL: readers never wait for the writer), so a page still comes
    at once. Through the store's own connection it would wait and answer 503 after 0.2 s."""
    port = api().port
    with sqlite_store._lock:  # what a long write (say a big history batch) holds
        threads = call(port, f"/api/whatsapp/threads/{ACCOUNT}?limit=5", token=API)
        messages = call(port, f"/api/whatsapp/messages/{ACCOUNT}/{PEER}?limit=5", token=API)
    assert threads.status == 200 and threads.json["count"] == 5
    assert messages.status == 200 and messages.json["messages"][0]["id"] == "m119"


def test_a_page_never_served_from_the_reader_is_stale(api: Any, sqlite_store: SqliteStore) -> None:
    """The reader sees every commit of the store's own connection at once."""
    port = api().port
    assert call(port, f"/api/whatsapp/messages/{ACCOUNT}/{PEER}?limit=1", token=API).json["messages"][0]["id"] == "m119"
    sqlite_store.upsert_messages([message("m500", ts_ms=T0 + 500)])
    assert call(port, f"/api/whatsapp/messages/{ACCOUNT}/{PEER}?limit=1", token=API).json["messages"][0]["id"] == "m500"


# -- pages kept while the store's marks hold (wadaemon.http.page_cache) ---------------------------

def _reads_of(store: SqliteStore) -> list[str]:
    """Every statement the store's local reader runs from now on."""
    statements: list[str] = []
    store.local_reader()._conn.set_trace_callback(statements.append)
    return statements


def test_an_unchanged_page_is_not_read_again(api: Any, sqlite_store: SqliteStore) -> None:
    port = api().port
    reads = _reads_of(sqlite_store)
    for path in (f"/api/whatsapp/threads/{ACCOUNT}?limit=5", f"/api/whatsapp/messages/{ACCOUNT}/{PEER}?limit=5"):
        first = call(port, path, token=API)
        count = len(reads)
        again = call(port, path, token=API)
        assert count > 0 and len(reads) == count, path  # the second answer read nothing
        assert again.status == 200 and again.raw == first.raw
    # Through an alias (a merged LID) a page is always read afresh: which thread an alias
    # names can change with any thread.
    alias = f"/api/whatsapp/messages/{ACCOUNT}/{PEER_LID}?limit=5"
    assert call(port, alias, token=API).json["thread"]["clientJid"] == PEER
    count = len(reads)
    assert call(port, alias, token=API).status == 200 and len(reads) > count


def _newest(port: int, path: str) -> Any:
    reply = call(port, path, token=API)
    assert reply.status == 200, reply.raw
    return reply.json


def test_a_kept_page_never_outlives_a_write_it_was_read_from(api: Any, sqlite_store: SqliteStore, tmp_path: Path) -> None:
    port = api().port
    threads = f"/api/whatsapp/threads/{ACCOUNT}?limit=1"
    peer = f"/api/whatsapp/messages/{ACCOUNT}/{PEER}?limit=1"
    other = f"/api/whatsapp/messages/{ACCOUNT}/40720000003@s.whatsapp.net?limit=1"
    assert _newest(port, peer)["messages"][0]["id"] == "m119"
    assert _newest(port, other)["messages"] == []
    # This store's own writes: a message, a receipt, a thread summary.
    sqlite_store.upsert_messages([message("m500", ts_ms=T0 + 500)])
    assert _newest(port, peer)["messages"][0]["id"] == "m500"
    assert _newest(port, peer)["messages"][0].get("status") != "read"
    sqlite_store.apply_receipts([receipt("m500", "read")])
    assert _newest(port, peer)["messages"][0]["status"] == "read"
    assert _newest(port, threads)["threads"][0]["clientJid"] == PEER
    sqlite_store.advance_threads([summary(T0 + 900, client_jid="40720000003@s.whatsapp.net")])
    assert _newest(port, threads)["threads"][0]["clientJid"] == "40720000003@s.whatsapp.net"
    assert _newest(port, other)["messages"] == []  # kept again, under the marks of now
    # Another connection to the file (another process would be the same): every mark moves.
    other_process = SqliteStore(sqlite_store.path)
    try:
        other_process.upsert_messages([message("x1", ts_ms=T0 + 950, client_jid="40720000003@s.whatsapp.net")])
        other_process.advance_threads([summary(T0 + 950, client_jid="40720000003@s.whatsapp.net", preview="from afar")])
    finally:
        other_process.close()
    assert _newest(port, other)["messages"][0]["id"] == "x1"
    assert _newest(port, threads)["threads"][0]["lastMessagePreview"] == "from afar"


def test_a_page_read_while_a_write_is_under_way_is_not_kept(api: Any, sqlite_store: SqliteStore) -> None:
    port = api().port
    path = f"/api/whatsapp/messages/{ACCOUNT}/{PEER}?limit=1"
    with sqlite_store._lock:  # a write under way: no marks can be read at once
        assert _newest(port, path)["messages"][0]["id"] == "m119"
    sqlite_store.upsert_messages([message("m501", ts_ms=T0 + 501)])
    assert _newest(port, path)["messages"][0]["id"] == "m501"


# -- data ---------------------------------------------------------------------------------------

def _walk(port: int, path: str, key: str, limit: int, between: Any = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for page in range(100):
        query = f"limit={limit}" + (f"&before={cursor}" if cursor else "")
        reply = call(port, f"{path}?{query}", token=API)
        assert reply.status == 200, reply.json
        items.extend(reply.json[key])
        assert reply.json["count"] == len(reply.json[key]) <= limit
        cursor = reply.json["nextBefore"]
        if cursor is None:
            return items
        if between is not None:
            between(page)
    raise AssertionError("paging never ended")


def test_message_pages_walk_back_without_gaps_or_repeats_while_messages_arrive(
        api: Any, sqlite_store: SqliteStore) -> None:
    port = api().port

    def arrive(page: int) -> None:
        sqlite_store.upsert_messages([message(f"new{page}", ts_ms=T0 + 10_000 + page)])

    walked = _walk(port, f"/api/whatsapp/messages/{ACCOUNT}/{PEER}", "messages", 25, arrive)
    ids = [m["id"] for m in walked]
    assert ids == [f"m{n:03d}" for n in reversed(range(120))] + ["lid-1"]
    assert walked[0]["tsClient"].endswith(("Z", "+00:00"))


def test_thread_pages_walk_every_thread_once(api: Any) -> None:
    walked = _walk(api().port, f"/api/whatsapp/threads/{ACCOUNT}", "threads", 7)
    ids = [t["id"] for t in walked]
    assert len(ids) == len(set(ids)) == 31
    assert ids[0] == thread_id_for(ACCOUNT, PEER)


def test_a_thread_is_found_by_id_jid_or_merged_lid(api: Any) -> None:
    port = api().port
    answers = [call(port, f"/api/whatsapp/messages/{ACCOUNT}/{ref}?limit=1", token=API)
               for ref in (thread_id_for(ACCOUNT, PEER), PEER, PEER_LID, thread_id_for(ACCOUNT, PEER_LID))]
    assert {a.status for a in answers} == {200}
    assert {a.json["thread"]["id"] for a in answers} == {thread_id_for(ACCOUNT, PEER)}
    assert PEER_LID in answers[0].json["thread"]["aliasJids"]


def test_accounts_in_the_inbox_shape(api: Any) -> None:
    reply = call(api().port, "/api/whatsapp/accounts", token=API)
    accounts = {a["id"]: a for a in reply.json["accounts"]}
    assert reply.json["success"] is True and reply.json["count"] == 2
    here = accounts[ACCOUNT]
    assert here["status"] == "connected" and here["phone"] == here["phoneNumber"] == "+40799999999"
    assert here["ownerInstance"] == "inst-1" and here["runsHere"] is True and here["name"] == ACCOUNT
    assert accounts["elsewhere"]["runsHere"] is False and accounts["elsewhere"]["ownerInstance"] == "inst-9"


def test_send_backfill_and_dashboard(api: Any) -> None:
    server = api()
    port, control = server.port, server.fake_control
    sent = call(port, f"/api/whatsapp/send/{ACCOUNT}", "POST", token=API,
                body={"to": "+40711111111", "text": "hi", "clientMessageId": "c1"})
    assert sent.status == 200 and sent.json == {"success": True, "messageId": "WA1", "status": "sent",
                                                "threadId": f"{ACCOUNT}__+40711111111", "error": None}
    assert control.sends == [(ACCOUNT, "+40711111111", "hi", "c1")]
    elsewhere = call(port, "/api/whatsapp/send/elsewhere", "POST", token=API, body={"to": PEER, "text": "x"})
    assert elsewhere.status == 409 and elsewhere.json["error"]["code"] == "account_not_here"
    assert "inst-9" in elsewhere.json["error"]["message"]
    started = call(port, f"/api/whatsapp/backfill/{ACCOUNT}", "POST", token=API)
    assert started.status == 202 and started.json["message"] == "Backfill started (runs asynchronously)"
    again = call(port, f"/api/admin/backfill/{ACCOUNT}", "POST", token=ADMIN)
    assert again.status == 200 and again.json["alreadyRunning"] is True
    board = call(port, "/api/status/dashboard", token=API)
    assert board.status == 200 and {a["accountId"] for a in board.json["accounts"]} == {ACCOUNT, "elsewhere"}


def test_send_and_backfill_are_rate_limited_per_token(api: Any) -> None:
    now = [1000.0]
    limiter = RateLimiter({"backfill": Limit(per_minute=6, burst=2)}, clock=lambda: now[0])
    port = api(limiter=limiter).port
    path = f"/api/whatsapp/backfill/{ACCOUNT}"
    assert [call(port, path, "POST", token=API).status for _ in range(2)] == [202, 200]
    limited = call(port, path, "POST", token=API)
    assert limited.status == 429 and limited.headers["Retry-After"] == "10"
    assert call(port, path, "POST", token=ADMIN).status == 200  # another credential, its own bucket
    now[0] += 10
    assert call(port, path, "POST", token=API).status == 200


# -- the document -------------------------------------------------------------------------------

def test_every_route_is_in_the_openapi_document(api: Any) -> None:
    document = call(api().port, "/openapi.json").json
    assert document["openapi"].startswith("3.1")
    for route in all_routes():
        operation = document["paths"][route.path][route.method.lower()]
        assert str(route.status) in operation["responses"]
        if route.level != "open":
            assert operation["security"] and {"401", "403"} <= set(operation["responses"])
    assert set(document["components"]["securitySchemes"]) == {"apiToken", "adminToken"}


def test_the_api_gateway_queues_busy_calls_within_the_budget_and_still_fails_hung_ones() -> None:
    import asyncio
    import threading

    from wadaemon.http.store_access import StoreCallFailed, StoreGateway

    release = threading.Event()
    gateway = StoreGateway(FakeStore().as_store(), timeout=5.0, max_in_flight=1, queue=True)

    def busy(_: Any) -> str:
        assert release.wait(10)
        return "done"

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(gateway.call(busy))
        second = asyncio.ensure_future(gateway.call(lambda _: "second"))
        await asyncio.sleep(0)  # both are waiting now: the first in its thread, the second for a slot
        assert not second.done()
        release.set()
        results: list[Any] = list(await asyncio.gather(first, second))
        release.clear()
        hung = asyncio.ensure_future(gateway.call(busy))
        await asyncio.sleep(0)
        with pytest.raises(StoreCallFailed):
            await gateway.call(lambda _: "never", budget=0.2)  # the only slot is held: the budget runs out
        release.set()
        results.append(await hung)
        return results

    try:
        assert asyncio.run(scenario()) == ["done", "second", "done"]
    finally:
        release.set()
        gateway.close()
