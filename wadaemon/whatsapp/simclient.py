"""A ``Transport`` connected to the simulated WhatsApp service (``wadaemon simserver``).

With ``WADAEMON_SIMSERVER=host:port``, ``wadaemon run`` gives every account one of these
instead of a neonize client; everything behind the transport (journal, translation, actors) is
the production code. The frames are ``wadaemon.whatsapp.simwire``'s.

Threads, and why two:

* the *link* thread connects, reads every frame, and answers calls' waiters at once;
* the *delivery* thread hands events to the sink and acks each one only after ``deliver``
  returned (the event is journaled): the service counts an event delivered only on that ack.

Separating them keeps replies flowing while the sink blocks: the identity resolver calls
``resolve_lid`` from the pipeline that drains the journal, so if the thread blocked in
``deliver`` (journal full) were also the one reading replies, the two would wait on each other
forever. The service sends one event at a time, so the queue between the threads holds at most
one event plus lifecycle markers.

Connection loss: the sink gets a genuine ``Disconnected`` event (account state
``disconnected``), and the link reconnects with exponential backoff (``reconnect_delay``)
until ``stop``. After ``StreamReplaced`` (another client took the account) it does not
reconnect, as whatsmeow does not: fighting back would only replace the other client in turn.
Nor does it reconnect once its ``licence`` (the account lease's fence) says no: a process
frozen past its lease is resumed with its socket closed by the service, and its link thread
may wake before trio has cancelled the account; asking the fence first keeps it from opening
a connection that would replace the new holder's.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import socket
import threading
from typing import TypeVar

import msgspec

from wadaemon.domain import GroupInfo
from wadaemon.whatsapp import protos as P
from wadaemon.whatsapp import simwire as W
from wadaemon.whatsapp.transport import (
    HistoryRequestUnavailable,
    Licence,
    RawEvent,
    RawEventSink,
    SendResult,
    TransportError,
    unconditional,
)

log = logging.getLogger("wadaemon.simclient")

CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 30.0
#: resolve_lid is asked from the pipeline itself: a frozen service must not hold it up long.
LID_TIMEOUT_S = 2.0
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0

_R = TypeVar("_R", bound=msgspec.Struct)


def reconnect_delay(attempt: int) -> float:
    """Seconds before reconnect attempt ``attempt`` (0-based): doubling from 0.2 s, at most 5 s."""
    return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(attempt, 16)))


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """Exactly ``size`` bytes; None at a clean end of stream before the first byte."""
    chunks = []
    got = 0
    while got < size:
        chunk = sock.recv(min(size - got, 1 << 20))
        if not chunk:
            if got == 0:
                return None
            raise ConnectionError("the service closed the connection mid-frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket) -> W.Frame | None:
    header = _recv_exact(sock, W.HEADER.size)
    if header is None:
        return None
    body = _recv_exact(sock, W.body_length(header))
    if body is None:
        raise ConnectionError("the service closed the connection mid-frame")
    return W.decode(body)


def service_accounts(address: tuple[str, int], client: str) -> list[str]:
    """The accounts the service has (its ``Welcome``)."""
    with socket.create_connection(address, timeout=CONNECT_TIMEOUT_S) as sock:
        sock.sendall(W.encode(W.Hello("", client)))
        welcome = read_frame(sock)
    if not isinstance(welcome, W.Welcome):
        raise TransportError(f"the simulated service at {address[0]}:{address[1]} did not welcome us: {welcome!r}")
    return welcome.accounts


class _Link:
    """One connection: its socket, a write lock, and the calls waiting for a reply."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.waiting: dict[int, tuple[threading.Event, list[W.Reply]]] = {}
        self.closed = False

    def send(self, frame: W.Frame) -> None:
        with self.lock:
            if self.closed:
                raise TransportError("not connected to the simulated service")
            try:
                self.sock.sendall(W.encode(frame))
            except OSError as exc:
                raise TransportError(f"connection to the simulated service lost: {exc}") from None

    def close(self) -> None:
        with self.lock:
            self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for done, _ in list(self.waiting.values()):
            done.set()  # no reply in the slot: the caller reports the connection lost


_Item = tuple[_Link, W.Event] | RawEvent | None


class SimServerTransport:
    """One account's connection to the simulated service; implements ``Transport``."""

    def __init__(self, account_id: str, address: tuple[str, int], client: str,
                 licence: Licence = unconditional) -> None:
        self.account_id = account_id
        self.address = address
        self.client = client
        self.licence = licence
        self._ids = itertools.count(1)
        self._link: _Link | None = None
        self._stopping = threading.Event()
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._sink: RawEventSink | None = None

    @property
    def supports_history_requests(self) -> bool:
        return True

    def start(self, sink: RawEventSink) -> None:
        if self._threads:
            raise TransportError("already started")
        self._sink = sink
        self._stopping.clear()
        self._queue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run_link, daemon=True, name=f"simclient-{self.account_id}"),
            threading.Thread(target=self._run_delivery, args=(sink, self._queue), daemon=True,
                             name=f"simclient-deliver-{self.account_id}"),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        link = self._link
        if link is not None:
            link.close()
        self._queue.put(None)
        for thread in self._threads:
            thread.join(10)
            if thread.is_alive():
                log.warning("[simclient] account=%s: %s still busy after 10s", self.account_id, thread.name)
        self._threads = []

    # -- calls -----------------------------------------------------------------------------

    def _call(self, op: str, args: msgspec.Struct, result: type[_R], timeout: float = CALL_TIMEOUT_S) -> _R:
        link = self._link
        if link is None:
            raise TransportError("not connected to the simulated service")
        call_id = next(self._ids)
        done = threading.Event()
        slot: list[W.Reply] = []
        link.waiting[call_id] = (done, slot)
        try:
            link.send(W.Call(call_id, op, W.to_args(args)))
            if not done.wait(timeout):
                raise TransportError(f"{op}: no reply from the simulated service within {timeout:g}s")
        finally:
            link.waiting.pop(call_id, None)
        if not slot:
            raise TransportError(f"{op}: connection to the simulated service lost")
        reply = slot[0]
        if reply.ok:
            return W.from_dict(result, reply.result)
        if reply.kind == "unavailable":
            raise HistoryRequestUnavailable(reply.error)
        raise TransportError(reply.error)

    def send_text(self, to_jid: str, text: str) -> SendResult:
        sent = self._call("send_text", W.SendTextArgs(to_jid, text), W.SendTextResult)
        return SendResult(sent.message_id, sent.ts_ms)

    def request_history(self, chat_jid: str, oldest_id: str, oldest_from_me: bool,
                        oldest_ts_ms: int, count: int) -> None:
        self._call("request_history", W.HistoryArgs(chat=chat_jid, oldest_id=oldest_id,
                                                    oldest_from_me=oldest_from_me,
                                                    oldest_ts_ms=oldest_ts_ms, count=count), W.Empty)

    def group_info(self, group_jid: str) -> GroupInfo:
        return self._call("group_info", W.GroupInfoArgs(group_jid), GroupInfo)

    def resolve_lid(self, lid_jid: str) -> str:
        """"" when unknown *or* when the service cannot be asked now (the resolver asks again
        for a LID only when it learns something new; a later event carries the mapping)."""
        try:
            return self._call("resolve_lid", W.ResolveLidArgs(lid_jid), W.ResolveLidResult, LID_TIMEOUT_S).pn
        except TransportError as exc:
            log.info("[simclient] account=%s resolve_lid unanswered: %s", self.account_id, exc)
            return ""

    # -- threads ---------------------------------------------------------------------------

    def _run_link(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                sock = socket.create_connection(self.address, timeout=CONNECT_TIMEOUT_S)
            except OSError as exc:
                delay = reconnect_delay(attempt)
                attempt += 1
                log.info("[simclient] account=%s cannot connect to %s:%d (%s); retrying in %.1fs",
                         self.account_id, *self.address, exc, delay)
                self._stopping.wait(delay)
                continue
            if not self.licence():  # the last moment before the service sees us
                sock.close()
                log.warning("[simclient] account=%s: the ownership lease is no longer held: not reconnecting",
                            self.account_id)
                return
            link = _Link(sock)
            replaced, welcomed = self._serve(link)
            if welcomed:
                attempt = 0
            if self._stopping.is_set() or replaced:
                return
            delay = reconnect_delay(attempt)
            attempt += 1
            self._stopping.wait(delay)

    def _serve(self, link: _Link) -> tuple[bool, bool]:
        """Run one connection until it ends: (stream replaced, welcomed)."""
        replaced = welcomed = False
        reason = "the service closed the connection"
        try:
            link.send(W.Hello(self.account_id, self.client))
            first = read_frame(link.sock)
            if not isinstance(first, W.Welcome):
                raise W.FrameError(f"expected welcome, got {first!r}")
            link.sock.settimeout(None)
            welcomed = True
            self._link = link
            log.info("[simclient] account=%s connected to %s:%d", self.account_id, *self.address)
            while (frame := read_frame(link.sock)) is not None:
                if isinstance(frame, W.Reply):
                    waiting = link.waiting.get(frame.id)
                    if waiting is not None:
                        waiting[1].append(frame)
                        waiting[0].set()
                elif isinstance(frame, W.Event):
                    replaced = replaced or frame.event.name == "StreamReplaced"
                    self._queue.put((link, frame))
                else:
                    raise W.FrameError(f"unexpected {type(frame).__name__} frame from the service")
        except (W.FrameError, TransportError, OSError) as exc:
            reason = str(exc)
        finally:
            self._link = None
            link.close()
        if not self._stopping.is_set():
            log.warning("[simclient] account=%s disconnected from %s:%d: %s%s", self.account_id,
                        *self.address, reason, " (stream replaced: not reconnecting)" if replaced else "")
            if welcomed and not replaced:
                self._queue.put(P.raw(P.disconnected()))
        return replaced, welcomed

    def _run_delivery(self, sink: RawEventSink, items: queue.SimpleQueue[_Item]) -> None:
        while (item := items.get()) is not None:
            if self._stopping.is_set():
                return
            try:
                if isinstance(item, RawEvent):
                    sink.deliver(item)
                    continue
                link, frame = item
                sink.deliver(frame.event)
                if frame.seq:  # 0: an unsolicited event (StreamReplaced) that wants no ack
                    link.send(W.Ack(frame.seq))
            except TransportError:
                pass  # the ack could not go out: the service holds the event and sends it again
            except Exception as exc:
                log.error("[simclient] account=%s: the sink refused an event; closing the connection "
                          "(the service will deliver it again): %r", self.account_id, exc)
                link_now = self._link
                if link_now is not None:
                    link_now.close()

    def __repr__(self) -> str:
        return f"SimServerTransport({self.account_id!r}, {self.address[0]}:{self.address[1]})"
