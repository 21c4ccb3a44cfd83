"""``wadaemon simserver``: a simulated WhatsApp service on loopback, for several daemon processes.

Backfill, shared accounts and failover happen *between* processes, so the phones must live
outside the daemon, as WhatsApp's servers and the user's phone do. This process owns one
``SimPhone`` per account (``wadaemon.whatsapp.simphone``: the one model of content, ids,
timestamps, addressing, pairing history and on-demand answers) and serves them to clients
(``wadaemon.whatsapp.simclient``) over the frames of ``wadaemon.whatsapp.simwire``. It is also
the *ground truth*: it answers, over a small HTTP JSON API, what each phone holds and what was
delivered to whom (docs/simserver.md).

How it behaves, as WhatsApp would:

* A connection's sink is the phone's sink: the phone's delivery thread hands an event to the
  asyncio loop, which writes one ``Event`` frame and waits for its ``Ack``. Only an acked
  event is *delivered* (recorded in the ground truth); an event in flight when the connection
  dies stays held by the phone (``SinkGone``) and goes out on the next connection. One event in
  flight per account is the backpressure: a slow journal slows its own phone, nobody else.
* One connection per account: a ``Hello`` for an account that is connected *replaces* the
  first connection, which gets a ``StreamReplaced`` event and is closed; every replacement is
  counted (split brain made visible).
* The pairing history goes out on an account's first connection ever (the phone remembers).
* While no connection is up, the phone holds live events (the offline queue, capped by
  ``--offline-cap``; droppable on command: the gap only an on-demand request can close).
* Live traffic streams run on threads of their own, connected or not.
* A client that sends garbage, disconnects mid-frame, or never reads (no ack within
  ``--ack-timeout``) is closed with the reason logged; nothing it does reaches another account,
  and no frame can crash the service (every connection's failure is confined to its task).

Why asyncio (not trio, as in the daemon): the control API is aiohttp, which needs an asyncio
loop, and the frame server is a handful of lines on the same loop; the service is a test and
demo tool outside the daemon's supervision tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from wadaemon.whatsapp import protos as P
from wadaemon.whatsapp import simwire as W
from wadaemon.whatsapp.simphone import LiveMix, SimPhone, SinkGone
from wadaemon.whatsapp.transport import HistoryRequestUnavailable, RawEvent, TransportError

log = logging.getLogger("wadaemon.simserver")

HELLO_TIMEOUT_S = 10.0
#: How long a replaced connection may take to take its StreamReplaced frame before it is closed.
REPLACED_WRITE_S = 1.0
_B = TypeVar("_B")
#: Failures of a best-effort write (to a replaced or closing connection), swallowed.
_BEST_EFFORT = (SinkGone, ConnectionError, OSError, TimeoutError)


class ServiceOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The knobs of one service (``wadaemon simserver --help``)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (printed)
    control_port: int = 0
    accounts: tuple[str, ...] = ("sim-1",)
    seed: int = 1
    chats: int = 12
    history: int = 240  # messages each phone holds (spread over its chats)
    pairing_history: int | None = None  # newest N per chat in the pairing history; None: all
    chunk_size: int = 500
    rate: float = 0.0  # live traffic events/s per account from the start (0: none)
    offline_cap: int = 10_000
    history_delay_ms: int = 0
    ack_timeout_s: float = 30.0


# --------------------------------------------------------------------------------------------
# Ground truth documents (the control API's JSON)
# --------------------------------------------------------------------------------------------


class ConnectionRecord(msgspec.Struct, kw_only=True, rename="camel"):
    number: int
    client: str
    connected_at_ms: int
    closed_at_ms: int | None = None
    reason: str = ""


class HeldMessage(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    chat: str  # as the phone addresses it (the LID for LID-addressed chats)
    chat_pn: str  # the phone number of a direct chat ("" for groups)
    chat_lid: str
    ts_ms: int
    from_me: bool
    origin: str  # pairing | archive | live | sent
    delivered_to: list[str]


class HistoryRequestRecord(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    chat: str
    oldest_id: str
    oldest_ts_ms: int
    count: int
    answered: bool
    messages: int


class AccountSummary(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    account: str
    connected_client: str | None
    connections: int
    replacements: int
    held: int
    dropped: int
    traffic_rate: float
    traffic_sent: int  # events the current (or last) stream emitted so far
    history_answers: bool
    history_delay_ms: int


class GroundTruth(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    account: str
    messages: list[HeldMessage]
    connections: list[ConnectionRecord]
    replacements: int
    held: int
    dropped: int
    history_requests: list[HistoryRequestRecord]

    def ids(self, *origins: str) -> set[str]:
        """Ids of the messages the phone holds (of these origins, when given)."""
        return {m.id for m in self.messages if not origins or m.origin in origins}

    def delivered_ids(self) -> set[str]:
        """Ids of the held messages some device acked."""
        return {m.id for m in self.messages if m.delivered_to}


class InjectBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``kind``: text (to the phone, or from it with ``fromMe``), edit / reaction / revoke of
    ``target``, receipt for ``targets``."""

    kind: str = "text"
    chat: str | int | None = None  # any JID of the chat, or its index; default: a pick
    text: str | None = None
    from_me: bool = False
    target: str = ""
    target_from_me: bool = True
    targets: list[str] = []
    receipt: str = "read"
    emoji: str = "\N{THUMBS UP SIGN}"


class TrafficBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    rate: float
    count: int | None = None  # None: until stopped
    outbound: float = 0.15
    receipts: float = 0.1
    edits: float = 0.02
    reactions: float = 0.02


class PhoneBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    history_answers: bool | None = None  # False: the phone is offline for history requests
    history_delay_ms: int | None = None
    fail_sends: list[str] = []  # the next sends fail with these reasons


# --------------------------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------------------------


class Connection:
    """One client connection, on the loop. ``push`` is one event out and its ack back."""

    def __init__(self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 ack_timeout_s: float) -> None:
        self.number = number
        self.reader = reader
        self.writer = writer
        self.ack_timeout_s = ack_timeout_s
        self.account = ""
        self.client = ""
        self.closed = False
        self.reason = ""
        self._seq = itertools.count(1)
        self._acks: dict[int, asyncio.Future[None]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, frame: W.Frame) -> None:
        if self.closed:
            raise SinkGone(f"connection {self.number} closed: {self.reason}")
        self.writer.write(W.encode(frame))
        await self.writer.drain()

    async def push(self, raw: RawEvent) -> None:
        seq = next(self._seq)
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[seq] = acked
        try:
            await asyncio.wait_for(self._push(seq, raw, acked), self.ack_timeout_s)
        except TimeoutError:
            self.close(f"no ack within {self.ack_timeout_s:g}s (the client does not read)")
            raise SinkGone(self.reason) from None
        except SinkGone:
            raise
        except (ConnectionError, OSError) as exc:
            self.close(f"write failed: {exc}")
            raise SinkGone(self.reason) from None
        finally:
            self._acks.pop(seq, None)

    async def _push(self, seq: int, raw: RawEvent, acked: asyncio.Future[None]) -> None:
        await self.send(W.Event(seq, raw))
        await acked

    def acked(self, seq: int) -> None:
        waiting = self._acks.get(seq)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def close(self, reason: str) -> None:
        """Close at once (abort: a client that does not read must not hold the close up)."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        for waiting in self._acks.values():
            if not waiting.done():
                waiting.set_exception(SinkGone(reason))
        for task in self.tasks:
            task.cancel()
        self.writer.transport.abort()


class _ConnectionSink:
    """The phone's sink for one connection: runs on the phone's delivery thread and blocks until
    the client acked (the event is journaled) or the connection is gone (``SinkGone``)."""

    def __init__(self, service: SimService, account: SimAccount, conn: Connection) -> None:
        self.service = service
        self.account = account
        self.conn = conn

    def deliver(self, event: RawEvent) -> None:
        future = asyncio.run_coroutine_threadsafe(
            self.service.deliver(self.account, self.conn, event), self.service.loop)
        try:
            future.result(self.conn.ack_timeout_s + 5)
        except SinkGone:
            raise
        except Exception as exc:
            future.cancel()
            raise SinkGone(f"delivery failed: {exc!r}") from None


class Traffic:
    """A paced live stream for one account on its own thread; it runs whether a device is
    connected or not (the phone holds what it cannot deliver)."""

    def __init__(self, phone: SimPhone, rate: float, mix: LiveMix, count: int | None) -> None:
        self.rate = rate
        self._phone = phone
        self._mix = mix
        self._count = count
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"traffic-{phone.account_id}")
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        for step in itertools.count():
            if self._count is not None and step >= self._count:
                return
            delay = started + step / self.rate - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            if self._stop.is_set():
                return
            self._phone.emit_live(self._mix)
            self.sent += 1

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class SimAccount:
    """One account: its phone, its current connection, and what the ground truth records."""

    def __init__(self, account_id: str, phone: SimPhone) -> None:
        self.account_id = account_id
        self.phone = phone
        self.conn: Connection | None = None
        self.lock = asyncio.Lock()
        self.connections: list[ConnectionRecord] = []
        self.replacements = 0
        self.delivered: dict[str, list[str]] = {}
        self.traffic: Traffic | None = None

    def summary(self) -> AccountSummary:
        return AccountSummary(
            account=self.account_id, connected_client=self.conn.client if self.conn else None,
            connections=len(self.connections), replacements=self.replacements,
            held=self.phone.held, dropped=self.phone.dropped,
            traffic_rate=self.traffic.rate if self.traffic and self.traffic.running else 0.0,
            traffic_sent=self.traffic.sent if self.traffic else 0,
            history_answers=self.phone.history_answers,
            history_delay_ms=round(self.phone.history_delay_s * 1000))

    def truth(self) -> GroundTruth:
        messages = [
            HeldMessage(id=mid, chat=chat.jid, chat_pn=chat.pn, chat_lid=chat.lid, ts_ms=ts_ms,
                        from_me=from_me, origin=origin, delivered_to=self.delivered.get(mid, []))
            for chat, mid, ts_ms, from_me, origin in self.phone.holdings()
        ]
        requests = [HistoryRequestRecord(chat=r.chat, oldest_id=r.oldest_id, oldest_ts_ms=r.oldest_ts_ms,
                                         count=r.count, answered=r.answered, messages=r.messages)
                    for r in list(self.phone.history_log)]
        return GroundTruth(account=self.account_id, messages=messages, connections=list(self.connections),
                           replacements=self.replacements, held=self.phone.held,
                           dropped=self.phone.dropped, history_requests=requests)


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


class SimService:
    def __init__(self, options: ServiceOptions) -> None:
        self.options = options
        self.accounts: dict[str, SimAccount] = {}
        for n, account_id in enumerate(options.accounts):
            phone = SimPhone(account_id, seed=options.seed * 100 + n, chats=options.chats,
                             history_messages=options.history, archive_depth=0,
                             pairing_per_chat=options.pairing_history, chunk_size=options.chunk_size,
                             max_held=options.offline_cap, history_delay_s=options.history_delay_ms / 1000)
            self.accounts[account_id] = SimAccount(account_id, phone)
        self._numbers = itertools.count(1)
        self._conns: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop  # set by run()
        self.address = ("", 0)
        self.control_address = ("", 0)
        self._calls: dict[str, Callable[[SimAccount, Connection, Any], msgspec.Struct]] = {
            "send_text": self._send_text,
            "request_history": self._request_history,
            "resolve_lid": self._resolve_lid,
            "group_info": self._group_info,
        }

    # -- frames ----------------------------------------------------------------------------

    async def deliver(self, account: SimAccount, conn: Connection, event: RawEvent) -> None:
        await conn.push(event)
        for mid in P.message_ids(event):
            account.delivered.setdefault(mid, []).append(conn.client)

    async def _read(self, reader: asyncio.StreamReader) -> W.Frame | None:
        """One frame; None on a clean end of stream between frames."""
        try:
            header = await reader.readexactly(W.HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        return W.decode(await reader.readexactly(W.body_length(header)))

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(next(self._numbers), reader, writer, self.options.ack_timeout_s)
        self._conns.add(conn)
        reason = "the client closed the connection"
        try:
            hello = await asyncio.wait_for(self._read(reader), HELLO_TIMEOUT_S)
            if not isinstance(hello, W.Hello):
                raise W.FrameError(f"expected hello, got {type(hello).__name__}")
            if hello.account and hello.account not in self.accounts:
                await conn.send(W.Bye(f"unknown account {hello.account!r}"))
                raise W.FrameError(f"hello for unknown account {hello.account!r}")
            conn.account, conn.client = hello.account, hello.client or f"conn-{conn.number}"
            await conn.send(W.Welcome(list(self.accounts)))
            if conn.account:
                await self._attach(conn)
            while (frame := await self._read(reader)) is not None:
                if isinstance(frame, W.Ack):
                    conn.acked(frame.seq)
                elif isinstance(frame, W.Call):
                    task = asyncio.create_task(self._call(conn, frame))
                    conn.tasks.add(task)
                    task.add_done_callback(conn.tasks.discard)
                else:
                    raise W.FrameError(f"unexpected {type(frame).__name__} frame from a client")
        except W.FrameError as exc:
            reason = f"bad frame: {exc}"
        except asyncio.IncompleteReadError:
            reason = "the client disconnected mid-frame"
        except TimeoutError:
            reason = f"no hello within {HELLO_TIMEOUT_S:g}s"
        except SinkGone as exc:
            reason = str(exc)
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc!r}"
        finally:
            conn.close(reason)
            self._conns.discard(conn)
            if conn.account:
                await self._detach(conn)
            log.info("[simserver] connection=%d account=%s client=%s closed: %s",
                     conn.number, conn.account or "-", conn.client or "-", conn.reason)

    async def _attach(self, conn: Connection) -> None:
        account = self.accounts[conn.account]
        async with account.lock:
            old = account.conn
            if old is not None:
                account.replacements += 1
                log.warning("[simserver] account=%s replacement=%d: client=%s replaces client=%s",
                            account.account_id, account.replacements, conn.client, old.client)
                with contextlib.suppress(*_BEST_EFFORT):
                    await asyncio.wait_for(old.send(W.Event(0, P.raw(P.stream_replaced()))), REPLACED_WRITE_S)
                old.close(f"replaced by client={conn.client} (connection {conn.number})")
                account.conn = None
                await asyncio.to_thread(account.phone.stop)
            account.conn = conn
            account.connections.append(ConnectionRecord(number=conn.number, client=conn.client,
                                                        connected_at_ms=_now_ms()))
            log.info("[simserver] account=%s connected client=%s connection=%d",
                     account.account_id, conn.client, conn.number)
            await asyncio.to_thread(account.phone.start, _ConnectionSink(self, account, conn))

    async def _detach(self, conn: Connection) -> None:
        account = self.accounts[conn.account]
        async with account.lock:
            for record in account.connections:
                if record.number == conn.number and record.closed_at_ms is None:
                    record.closed_at_ms = _now_ms()
                    record.reason = conn.reason
            if account.conn is conn:
                account.conn = None
                await asyncio.to_thread(account.phone.stop)

    async def _call(self, conn: Connection, call: W.Call) -> None:
        reply: W.Reply
        try:
            spec = W.CALLS.get(call.op)
            if spec is None:
                raise W.FrameError(f"unknown call {call.op!r}")
            args = W.from_dict(spec[0], call.args)
            account = self.accounts.get(conn.account)
            if account is None:
                raise W.FrameError(f"{call.op} needs a connection for an account")
            if account.conn is not conn:
                raise TransportError("not connected (this connection was replaced)")
            result = await asyncio.to_thread(self._calls[call.op], account, conn, args)
            reply = W.Reply(id=call.id, ok=True, result=W.to_args(result))
        except W.FrameError as exc:
            reply = W.Reply(id=call.id, ok=False, error=str(exc), kind="bad_request")
        except HistoryRequestUnavailable as exc:
            reply = W.Reply(id=call.id, ok=False, error=str(exc), kind="unavailable")
        except TransportError as exc:
            reply = W.Reply(id=call.id, ok=False, error=str(exc), kind="transport")
        with contextlib.suppress(*_BEST_EFFORT):
            await conn.send(reply)

    def _send_text(self, account: SimAccount, conn: Connection, args: W.SendTextArgs) -> msgspec.Struct:
        sent = account.phone.send_text(args.to, args.text)
        self.loop.call_soon_threadsafe(
            lambda: account.delivered.setdefault(sent.message_id, []).append(conn.client))
        return W.SendTextResult(sent.message_id, sent.ts_ms)

    def _request_history(self, account: SimAccount, conn: Connection, args: W.HistoryArgs) -> msgspec.Struct:
        account.phone.request_history(args.chat, args.oldest_id, args.oldest_from_me, args.oldest_ts_ms,
                                      args.count)
        return W.Empty()

    def _resolve_lid(self, account: SimAccount, conn: Connection, args: W.ResolveLidArgs) -> msgspec.Struct:
        return W.ResolveLidResult(account.phone.resolve_lid(args.lid))

    def _group_info(self, account: SimAccount, conn: Connection, args: W.GroupInfoArgs) -> msgspec.Struct:
        return account.phone.group_info(args.group)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, ready: Callable[[SimService], None] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_default_executor(ThreadPoolExecutor(max_workers=64, thread_name_prefix="simserver"))
        server = await asyncio.start_server(self.serve_connection, self.options.host, self.options.port)
        self.address = server.sockets[0].getsockname()[:2]
        runner = web.AppRunner(self.control_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.options.host, self.options.control_port)
        await site.start()
        assert site._server is not None
        self.control_address = site._server.sockets[0].getsockname()[:2]  # type: ignore[attr-defined]
        if self.options.rate > 0:
            for account in self.accounts.values():
                account.traffic = Traffic(account.phone, self.options.rate, account.phone.live_mix(), None)
        stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, stopping.set)
        if ready is not None:
            ready(self)
        try:
            await stopping.wait()
        finally:
            log.info("[simserver] stopping")
            server.close()
            for account in self.accounts.values():
                if account.traffic is not None:
                    account.traffic.stop()
            for conn in list(self._conns):
                conn.close("the service is stopping")
            await runner.cleanup()
            for account in self.accounts.values():
                await asyncio.to_thread(account.phone.stop)

    # -- control API -----------------------------------------------------------------------

    def control_app(self) -> web.Application:
        app = web.Application()
        app.add_routes([
            web.get("/health", self._health),
            web.get("/accounts", self._list_accounts),
            web.get("/accounts/{account}", self._account_summary),
            web.get("/accounts/{account}/truth", self._truth),
            web.post("/accounts/{account}/inject", self._inject),
            web.post("/accounts/{account}/traffic", self._start_traffic),
            web.delete("/accounts/{account}/traffic", self._stop_traffic),
            web.post("/accounts/{account}/offline-queue/drop", self._drop_queue),
            web.post("/accounts/{account}/phone", self._phone),
            web.post("/accounts/{account}/disconnect", self._disconnect),
        ])
        return app

    def _account(self, request: web.Request) -> SimAccount:
        account = self.accounts.get(request.match_info["account"])
        if account is None:
            raise _error(404, f"no account {request.match_info['account']!r}")
        return account

    async def _body(self, request: web.Request, kind: type[_B]) -> _B:
        try:
            return msgspec.json.decode(await request.read() or b"{}", type=kind)
        except msgspec.DecodeError as exc:
            raise _error(400, f"bad body: {exc}") from None

    async def _health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def _list_accounts(self, request: web.Request) -> web.Response:
        return _json([account.summary() for account in self.accounts.values()])

    async def _account_summary(self, request: web.Request) -> web.Response:
        return _json(self._account(request).summary())

    async def _truth(self, request: web.Request) -> web.Response:
        account = self._account(request)
        return _json(await asyncio.to_thread(account.truth))

    async def _inject(self, request: web.Request) -> web.Response:
        account = self._account(request)
        body = await self._body(request, InjectBody)
        try:
            message_id = await asyncio.to_thread(_inject, account.phone, body)
        except (KeyError, IndexError, ValueError) as exc:
            raise _error(400, f"cannot inject: {exc}") from None
        return _json({"id": message_id})

    async def _start_traffic(self, request: web.Request) -> web.Response:
        account = self._account(request)
        body = await self._body(request, TrafficBody)
        if body.rate <= 0:
            raise _error(400, "rate must be positive (DELETE stops traffic)")
        if account.traffic is not None:
            await asyncio.to_thread(account.traffic.stop)
        mix = account.phone.live_mix(outbound_ratio=body.outbound, receipt_ratio=body.receipts,
                                     edit_ratio=body.edits, reaction_ratio=body.reactions)
        account.traffic = Traffic(account.phone, body.rate, mix, body.count)
        return _json(account.summary())

    async def _stop_traffic(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account.traffic is not None:
            await asyncio.to_thread(account.traffic.stop)
        return _json(account.summary())

    async def _drop_queue(self, request: web.Request) -> web.Response:
        account = self._account(request)
        dropped = account.phone.drop_held()
        log.info("[simserver] account=%s offline queue dropped: %d events", account.account_id, dropped)
        return _json({"dropped": dropped})

    async def _phone(self, request: web.Request) -> web.Response:
        account = self._account(request)
        body = await self._body(request, PhoneBody)
        if body.history_answers is not None:
            account.phone.history_answers = body.history_answers
        if body.history_delay_ms is not None:
            account.phone.history_delay_s = max(0, body.history_delay_ms) / 1000
        if body.fail_sends:
            account.phone.fail_sends(*body.fail_sends)
        return _json(account.summary())

    async def _disconnect(self, request: web.Request) -> web.Response:
        account = self._account(request)
        conn = account.conn
        if conn is not None:
            conn.close("disconnected through the control API")
        return _json({"closed": conn is not None})


def _inject(phone: SimPhone, body: InjectBody) -> str:
    chat = phone.chat(body.chat) if body.chat is not None else None
    if body.kind == "text":
        if body.from_me:
            return phone.emit_outbound(chat if chat is not None else 0, body.text or "sent from the phone")
        return phone.emit_inbound(chat, body.text)
    if chat is None:
        raise ValueError(f"{body.kind} needs a chat")
    if body.kind == "edit":
        return phone.emit_edit(chat, body.target, body.text or "edited", from_me=body.target_from_me)
    if body.kind == "revoke":
        return phone.emit_revoke(chat, body.target, from_me=body.target_from_me)
    if body.kind == "reaction":
        return phone.emit_reaction(chat, body.target, body.emoji, target_from_me=body.target_from_me)
    if body.kind == "receipt":
        phone.emit_receipt(chat, body.targets or [body.target], body.receipt)
        return ""
    raise ValueError(f"unknown kind {body.kind!r} (text, edit, revoke, reaction, receipt)")


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {400: web.HTTPBadRequest, 404: web.HTTPNotFound}
    return kinds[status](text=msgspec.json.encode({"error": message}).decode(), content_type="application/json")


def serve(options: ServiceOptions, announce: Callable[[str], None] = print) -> None:
    """Run the service until SIGTERM/SIGINT; prints one line once both listeners are up."""

    def ready(service: SimService) -> None:
        host, port = service.address
        chost, cport = service.control_address
        announce(f"simserver listening on {host}:{port} control http://{chost}:{cport} "
                 f"accounts={','.join(service.accounts)}")

    asyncio.run(SimService(options).run(ready))

