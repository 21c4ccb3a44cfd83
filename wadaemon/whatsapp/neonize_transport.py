"""The production transport: one neonize 0.5.2 client per WhatsApp account.

Every guard in this module exists for a trap listed in docs/whatsapp.md:

* neonize is imported lazily (``_neonize``), never at module import: importing it calls
  ``logging.basicConfig(level=INFO)``, so the daemon configures logging first. The Go log level
  is read once at ``connect()`` from the ``neonize.utils.log`` logger: it is set (WARNING, unless
  configured) before every connect, or every Go DEBUG line crosses into Python.
* One handler per event type is registered before ``connect()`` (the subscribed set is sent to Go
  once). Handlers are closures, not bound methods: neonize holds bound methods weakly and would
  silently drop events once the method object is collected. A handler serialises the event,
  hands it to the sink and returns; ``sink.deliver`` blocks until the event is journaled, which
  is the backpressure on Go's dispatch thread (whatsmeow has already acknowledged the event to
  WhatsApp, so the journal is the only copy). A handler never raises into Go.
* ``connect()`` blocks for the whole connection (and forever during a stuck QR pairing), so it
  runs on a thread of its own, and an unpaired session is never connected by ``start``. Go's
  ``Stop`` can block ~60 s while a dial hangs: it runs on a worker thread and ``stop`` gives up
  waiting after ``stop_timeout_s``. whatsmeow reconnects by itself only once connected: when
  ``connect()`` ends without ``stop`` (a failed first dial), the transport reconnects with backoff.
* Go's ``clients`` map has no lock: registering a client (start) and removing one (stop) are
  serialised process-wide, and calls into a client (which read the map) never overlap with them
  (``_ClientMapLock``). neonize's own GC finaliser, which calls Go ``Stop`` from whatever thread
  collects the client, is detached for the same reason.
* A client call made when the client is not registered in Go can crash the whole process
  (``get_pn_from_lid`` dereferences a nil client): every call is gated on the session's own
  "live" flag, which opens only once Go has called back (proof the client is registered) and
  closes before ``stop`` touches Go.
* The global ``neonize.events.event`` flag is shared by all clients: it is never used here.
* neonize 0.5.2 cannot send an on-demand history request (no peer-message API):
  ``request_history`` feature-detects ``NewClient.request_history_sync`` (upstream
  krypton-byte/neonize#215) and otherwise raises ``HistoryRequestUnavailable`` — it never falls
  back to sending anything to the user's own chat.
"""

from __future__ import annotations

import ctypes
import inspect
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wadaemon.domain import GroupInfo
from wadaemon.identity import normalise_jid
from wadaemon.whatsapp.capture import CaptureWriter
from wadaemon.whatsapp.sessions import FileSession, Session
from wadaemon.whatsapp.transport import (
    HistoryRequestUnavailable,
    Licence,
    RawEvent,
    RawEventSink,
    SendResult,
    TransportError,
    unconditional,
)

log = logging.getLogger("wadaemon.neonize")

#: The ``Neonize_pb2`` event classes subscribed, by name: exactly those the translator reads.
#: ``QR`` is not among them: the QR code arrives through neonize's QR callback while Go is still
#: in its pairing loop (a subscribed QR event would only be dispatched after that loop), and the
#: callback's code is delivered as a genuine ``QR`` event (``_Session.on_qr``).
SUBSCRIBED_EVENTS: tuple[str, ...] = (
    "Message", "Receipt", "HistorySync",
    "Connected", "Disconnected", "LoggedOut", "StreamReplaced", "ConnectFailure",
    "TemporaryBan", "ClientOutdated", "StreamError",
    "OfflineSyncPreview", "OfflineSyncCompleted", "PairStatus", "GroupInfoEvent", "JoinedGroup",
)
#: Events that carry conversation data (losing one loses messages or statuses).
DATA_EVENTS = frozenset({"Message", "Receipt", "HistorySync"})

HISTORY_UNAVAILABLE = (
    "neonize 0.5.2 cannot send on-demand history requests (the request must go to the account's "
    "own JID as a peer message, which it does not expose; see krypton-byte/neonize#215)"
)

#: How the linked device presents itself; ``platformType`` also names the client in PairPhone.
DEVICE_OS = "wadaemon"
#: History asked for at link time when ``full_history``, unless configured otherwise
#: (``WHATSAPP_HISTORY_SYNC_DAYS`` / ``_SIZE_MB`` / ``_QUOTA_MB``): whatsmeow's own generous
#: defaults, restated so they are visible — ten years, 100 GB.
FULL_SYNC_DAYS_LIMIT = 3650
FULL_SYNC_SIZE_MB_LIMIT = 102_400
FULL_SYNC_STORAGE_QUOTA_MB = 102_400


def _neonize() -> Any:
    """``neonize.client``, imported on first use — after the daemon configured logging, since
    importing neonize calls ``logging.basicConfig`` — with Go's log level set (docs/whatsapp.md: read
    once at ``connect()`` from this logger; left unset, every Go DEBUG line crosses into Python).
    An explicitly configured level is respected."""
    go_log = logging.getLogger("neonize.utils.log")
    if go_log.level == logging.NOTSET:
        go_log.setLevel(logging.WARNING)
    from neonize import client as neonize_client

    return neonize_client


def _pb() -> Any:
    """``neonize.proto.Neonize_pb2`` (lazily, like everything neonize)."""
    _neonize()
    from neonize.proto import Neonize_pb2

    return Neonize_pb2


def _jid_proto(text: str) -> Any:
    from wadaemon.whatsapp.protos import parse_jid

    return parse_jid(text)


# --------------------------------------------------------------------------------------------
# Go's client map
# --------------------------------------------------------------------------------------------


class _ClientMapLock:
    """Guards neonize's Go ``clients`` map, which has no lock of its own (docs/whatsapp.md).

    *Exclusive*: writing the map — a client registering itself at start, or ``Stop`` removing
    it — one at a time, process-wide. *Shared*: a call into a registered client, which reads the
    map. Readers are preferred (a waiting writer does not hold new readers back) so that a slow
    ``disconnect`` of one account (~60 s while a dial hangs) does not queue every other
    account's calls behind a writer that is itself waiting for it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    def acquire_shared(self, timeout: float | None) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: not self._writer, timeout):
                return False
            self._readers += 1
            return True

    def release_shared(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        self.acquire_shared(None)
        try:
            yield
        finally:
            self.release_shared()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


_CLIENT_MAP = _ClientMapLock()


CONNECTION_ENDED = "connection ended"

# --------------------------------------------------------------------------------------------
# One connection
# --------------------------------------------------------------------------------------------


class _PairWatch:
    """What ``pair`` waits for, fed from Go's callback threads."""

    def __init__(self, on_qr: Callable[[str], None] | None) -> None:
        self.on_qr = on_qr
        self.qr_seen = threading.Event()
        self.finished = threading.Event()  # pairing succeeded or failed
        self.connected = threading.Event()  # the first login after pairing
        self.succeeded = False
        self.error = ""
        self.jid = ""

    def qr(self, code: str) -> None:
        self.qr_seen.set()
        if self.on_qr is not None:
            self.on_qr(code)

    def login_status(self, status: str) -> None:
        """whatsmeow's QR channel outcome: ``success``, ``timeout`` or ``err-…``."""
        if status == "success":
            self._finish(ok=True)
        elif status:
            self._finish(ok=False, error=f"pairing ended: {status}")

    def event(self, name: str, event: Any) -> None:
        if name == "PairStatus":
            if event.Status == type(event).SUCCESS:
                if event.ID.User:
                    self.jid = normalise_jid(f"{event.ID.User}@{event.ID.Server}")
                self._finish(ok=True)
            else:
                self._finish(ok=False, error=event.Error or "pairing failed")
        elif name == "Connected":
            self.connected.set()
        elif name == "LoggedOut":
            self._finish(ok=False, error="logged out while pairing")

    def ended(self) -> None:
        self._finish(ok=False, error="the connection ended before pairing completed")
        self.connected.set()

    def fail(self, error: str) -> None:
        self._finish(ok=False, error=error)

    def _finish(self, *, ok: bool, error: str = "") -> None:
        if self.finished.is_set():
            return
        self.succeeded = ok
        self.error = error
        self.finished.set()


class _PairingSink:
    """The sink of a ``pair`` run given none: pairing stops right after the first login, before
    the phone pushes history, but whatever data event slips in cannot be kept — say so."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self._warned: set[str] = set()

    def deliver(self, event: RawEvent) -> None:
        if event.name in DATA_EVENTS and event.name not in self._warned:
            self._warned.add(event.name)
            log.warning("[neonize] accountId=%s %s event arrived while pairing without a journal: "
                        "not kept", self.account_id, event.name)


class _Session:
    """One start..stop span of one ``NewClient``: its handlers, its sink and its gate.

    A fresh session per start means a callback from a connection that outlived a timed-out
    ``stop`` can never open the gate of the next one.
    """

    def __init__(self, account_id: str, client: Any, pb: Any, sink: RawEventSink,
                 capture: CaptureWriter | None, pairing: _PairWatch | None) -> None:
        self.account_id = account_id
        self.client = client
        self.pb = pb
        self.sink = sink
        self.capture = capture
        self.pairing = pairing
        #: Strong references to the registered callbacks (neonize keeps plain functions strongly
        #: too; this also lets tests check what was registered).
        self.handlers: dict[str, Callable[[Any, Any], None]] = {}
        self.registered = threading.Event()  # Go has called back: the client is in Go's map
        self.settled = threading.Event()  # registered, or connect() already returned
        self.ended = threading.Event()  # connect() returned: Go let go of the client
        self.thread: threading.Thread | None = None
        self.shutdown: threading.Thread | None = None
        self._lock = threading.Lock()
        self._live = False
        self._closed = ""  # why the gate closed for good ("" while it may open)
        self.started_at = time.monotonic()
        self._qr_logged = False

    # -- the gate ---------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self._live

    @property
    def closed_reason(self) -> str:
        return self._closed

    def note_alive(self) -> None:
        """Any callback from Go proves the client is registered in Go's map."""
        with self._lock:
            if not self._closed:
                self._live = True
        self.registered.set()
        self.settled.set()

    def close_gate(self, reason: str) -> None:
        with self._lock:
            self._live = False
            self._closed = self._closed or reason

    def end(self) -> None:
        self.close_gate(CONNECTION_ENDED)
        self.ended.set()
        self.settled.set()
        if self.pairing is not None:
            self.pairing.ended()

    # -- callbacks from Go (must never raise) -----------------------------------------------

    def make_handler(self, name: str) -> Callable[[Any, Any], None]:
        def handle(_client: Any, event: Any) -> None:
            self.on_event(name, event)

        return handle

    def on_event(self, name: str, event: Any) -> None:
        try:
            raw = RawEvent(name, event.SerializeToString())
        except Exception:
            log.exception("[neonize] accountId=%s %s event could not be serialised: LOST",
                          self.account_id, name)
            return
        self.note_alive()
        if name == "LoggedOut":
            self.close_gate("logged out")  # the device is gone from the session store
        if self.pairing is not None:
            try:
                self.pairing.event(name, event)
            except Exception:
                log.exception("[neonize] accountId=%s pairing watch failed on %s",
                              self.account_id, name)
        self.hand_over(raw)

    def on_qr(self, _client: Any, data: bytes) -> None:
        try:
            code = bytes(data).decode("utf-8", "replace")
            self.note_alive()
            if self.pairing is not None:
                self.pairing.qr(code)
            elif not self._qr_logged:
                self._qr_logged = True
                log.warning("[neonize] accountId=%s is not paired and shows a QR code: pair it "
                            "with `wadaemon pair %s`", self.account_id, self.account_id)
            raw = RawEvent("QR", self.pb.QR(Codes=[code]).SerializeToString())
        except Exception:
            log.exception("[neonize] accountId=%s QR callback failed", self.account_id)
            return
        self.hand_over(raw)

    def on_login_status(self, _uuid: Any, status: Any) -> None:
        """Replaces neonize's ``__onLoginStatus`` (which only prints a pointer): whatsmeow's QR
        channel outcome, the earliest word that pairing succeeded, failed or timed out."""
        try:
            text = ctypes.string_at(status).decode("utf-8", "replace") if status else ""
            self.note_alive()
            log.info("[neonize] accountId=%s pairing status=%s", self.account_id, text)
            if self.pairing is not None:
                self.pairing.login_status(text)
        except Exception:
            log.exception("[neonize] accountId=%s login status callback failed", self.account_id)

    def hand_over(self, raw: RawEvent) -> None:
        """Capture line first (a debugging record, so its failure is only logged), then the sink,
        which blocks until the event is journaled."""
        if self.capture is not None:
            try:
                self.capture.write(raw)
            except Exception:
                log.exception("[neonize] accountId=%s capture of %s event failed",
                              self.account_id, raw.name)
        try:
            self.sink.deliver(raw)
        except Exception:
            log.exception("[neonize] accountId=%s %s event could not be journaled: LOST",
                          self.account_id, raw.name)


# --------------------------------------------------------------------------------------------
# The transport
# --------------------------------------------------------------------------------------------


class NeonizeTransport:
    """``Transport`` over a real neonize client, whose session lives in ``session``."""

    #: How long start holds Go's client map for the new client to register itself (ended early
    #: by the first callback from Go). Registration is a SQLite open and a read: well under this.
    start_settle_s = 2.0
    #: How long ``stop`` waits for Go to let go (Go's Stop can block ~60 s while a dial hangs).
    stop_timeout_s = 70.0
    #: How long a send or history request waits for another account's start or stop.
    call_wait_s = 30.0
    #: Pairing: overall limit (whatsmeow's QR codes expire after ~160 s), and how long to wait
    #: after success for the first login that completes the link.
    pair_timeout_s = 300.0
    pair_login_s = 20.0
    #: When connect() ends without stop() (it failed, e.g. no network at boot — whatsmeow
    #: reconnects by itself only once connected), a new connection after this delay, doubled
    #: on each quick failure up to the cap.
    reconnect_min_s = 5.0
    reconnect_max_s = 300.0

    def __init__(self, account_id: str, session: Session | Path | str, *, full_history: bool,
                 capture: CaptureWriter | None = None, full_sync_days: int = FULL_SYNC_DAYS_LIMIT,
                 full_sync_size_mb: int = FULL_SYNC_SIZE_MB_LIMIT,
                 full_sync_quota_mb: int = FULL_SYNC_STORAGE_QUOTA_MB,
                 licence: Licence = unconditional) -> None:
        """``session``: where the whatsmeow session lives (``wadaemon.whatsapp.sessions``); a
        path is a session file. ``licence`` gates this transport's own reconnects (``Licence``);
        whatsmeow's reconnects inside a connection are stopped by ``stop`` when the fence
        cancels the account."""
        self.account_id = account_id
        self.licence = licence
        self.session: Session = (FileSession(account_id, Path(session)) if isinstance(session, Path | str)
                                 else session)
        self.full_history = full_history
        self.full_sync_limits = (full_sync_days, full_sync_size_mb, full_sync_quota_mb)
        self.capture = capture
        self._session: _Session | None = None
        self._lifecycle = threading.Lock()  # this transport's start/stop/pair, one at a time
        self._wanted = False  # between start() and stop(): reconnect after an unexpected end
        self._reconnect_delay = self.reconnect_min_s
        self._reconnect_timer: threading.Timer | None = None

    # -- state ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Go holds a registered client for this account and it may be called."""
        session = self._session
        return session is not None and session.live

    @property
    def supports_history_requests(self) -> bool:
        """Whether this neonize can send on-demand history requests (not 0.5.2 as released)."""
        return hasattr(_neonize().NewClient, "request_history_sync")

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, sink: RawEventSink) -> None:
        """Connect on a thread of its own; returns once Go has registered the client (or after
        ``start_settle_s``). An unpaired session is not connected — connecting would sit in a
        QR pairing loop that ``stop`` cannot end (docs/whatsapp.md) — and is reported to the sink as
        a ``LoggedOut`` (on connect) event, which is what whatsmeow says of a removed device."""
        if not self.session.paired_jid():
            log.error("[neonize] accountId=%s has no paired device in its session store: run `wadaemon pair %s`",
                      self.account_id, self.account_id)
            self._report_unpaired(sink)
            return
        with self._lifecycle:
            self._open_locked(sink, pairing=None)
            self._wanted = True
            self._reconnect_delay = self.reconnect_min_s
        log.info("[neonize] accountId=%s started", self.account_id)

    def stop(self) -> None:
        """Disconnect and let Go drop the client, from a worker thread, waiting at most
        ``stop_timeout_s``. When that expires (a hung dial) an error is logged and the worker
        carries on; events Go still dispatches meanwhile keep going to the sink."""
        with self._lifecycle:
            self._wanted = False
            if self._reconnect_timer is not None:
                self._reconnect_timer.cancel()
                self._reconnect_timer = None
            session = self._session
            if session is None or session.ended.is_set():
                return
            session.close_gate("stopping")  # no new client call from here on
            if session.shutdown is None:
                session.shutdown = threading.Thread(
                    target=self._shut_down, args=(session, time.monotonic() + self.stop_timeout_s),
                    name=f"neonize-stop-{self.account_id}", daemon=True)
                session.shutdown.start()
            if session.ended.wait(self.stop_timeout_s):
                if session.thread is not None:
                    session.thread.join(5.0)
                log.info("[neonize] accountId=%s stopped", self.account_id)
            else:
                log.error("[neonize] accountId=%s did not stop within %.0f s; still trying in the "
                          "background", self.account_id, self.stop_timeout_s)

    def pair(self, phone: str | None, on_code: Callable[[str], None], *,
             on_qr: Callable[[str], None] | None = None,
             sink: RawEventSink | None = None) -> str:
        """Link this account; blocks until paired, failed or ``pair_timeout_s``.

        Without ``phone``, QR codes are shown (``on_qr``, default: printed in the terminal) for
        WhatsApp > Linked devices > Link a device. With ``phone`` (international number), a pair
        code is requested once Go is connected and handed to ``on_code``, for "Link with phone
        number". The connection is stopped right after the first login that completes the link,
        before the phone starts pushing history, which then reaches the daemon on its first
        connect. Events arriving meanwhile go to ``sink`` (e.g. the account's journal) when
        given. Returns the paired JID, "" when pairing did not complete (the reason is logged).
        """
        existing = self.session.paired_jid()
        if existing:
            log.info("[neonize] accountId=%s is already paired as %s", self.account_id, existing)
            return existing
        digits = re.sub(r"\D", "", phone or "")
        if phone is not None and not 7 <= len(digits) <= 15:
            log.error("[neonize] accountId=%s: %r is not a phone number in international format",
                      self.account_id, phone)
            return ""
        watch = _PairWatch(None if phone is not None else (on_qr or print_terminal_qr))
        with self._lifecycle:
            self._open_locked(sink or _PairingSink(self.account_id), pairing=watch)
        deadline = time.monotonic() + self.pair_timeout_s
        try:
            if phone is not None:
                self._request_pair_code(watch, digits, on_code, deadline)
            watch.finished.wait(max(0.0, deadline - time.monotonic()))
            if watch.succeeded:
                watch.connected.wait(max(0.0, min(self.pair_login_s,
                                                  deadline - time.monotonic())))
        finally:
            self.stop()
        jid = self.session.paired_jid() or (watch.jid if watch.succeeded else "")
        if not jid:
            log.error("[neonize] accountId=%s pairing did not complete: %s", self.account_id,
                      watch.error or "timed out")
        return jid

    # -- calls ------------------------------------------------------------------------------

    def send_text(self, to_jid: str, text: str) -> SendResult:
        """Blocks until the server acknowledged (neonize: up to ~75 s). ``SendResponse.Timestamp``
        is in seconds (docs/whatsapp.md); the result carries milliseconds."""
        target = normalise_jid(to_jid.strip())
        if target.isdigit():
            target = f"{target}@s.whatsapp.net"
        if "@" not in target or target.startswith("@"):
            raise TransportError(f"cannot send to {to_jid!r}: not a WhatsApp JID")
        with self._client_call("send", wait_s=self.call_wait_s) as client:
            try:
                response = client.send_message(_jid_proto(target), text)
            except Exception as exc:
                raise TransportError(f"sending to {target} failed: {exc}") from exc
        message_id = str(response.ID)
        if not message_id:
            raise TransportError(f"sending to {target} returned no message id")
        ts_s = int(response.Timestamp)
        return SendResult(message_id=message_id,
                          ts_ms=ts_s * 1000 if ts_s > 0 else int(time.time() * 1000))

    def request_history(self, chat_jid: str, oldest_id: str, oldest_from_me: bool,
                        oldest_ts_ms: int, count: int) -> None:
        """Ask the phone for older messages through ``NewClient.request_history_sync`` when
        neonize has it (krypton-byte/neonize#215); neonize 0.5.2 does not: raises
        ``HistoryRequestUnavailable`` — never a workaround message to the user's own chat."""
        method = getattr(_neonize().NewClient, "request_history_sync", None)
        if method is None:
            raise HistoryRequestUnavailable(HISTORY_UNAVAILABLE)
        chat = normalise_jid(chat_jid)
        timestamp = _history_timestamp(method, oldest_ts_ms)
        with self._client_call("history request", wait_s=self.call_wait_s) as client:
            try:
                client.request_history_sync(_jid_proto(chat), oldest_id, oldest_from_me,
                                            timestamp, count)
            except Exception as exc:
                raise TransportError(f"history request for {chat} failed: {exc}") from exc

    def resolve_lid(self, lid_jid: str) -> str:
        """The phone-number JID whatsmeow's LID store maps ``lid_jid`` to; "" when unknown,
        when the client is not running (``get_pn_from_lid`` on an unregistered client crashes
        the process), or when another account's start or stop holds Go's client map — this is
        called from the trio thread, so it never waits."""
        lid = normalise_jid(lid_jid)
        if not lid.endswith("@lid"):
            return ""
        try:
            with self._client_call("LID lookup", wait_s=0) as client:
                pn = client.get_pn_from_lid(_jid_proto(lid))
        except Exception as exc:
            log.debug("[neonize] accountId=%s LID lookup unavailable: %s", self.account_id, exc)
            return ""
        if not pn.User:
            return ""
        return normalise_jid(f"{pn.User}@{pn.Server or 's.whatsapp.net'}")

    def group_info(self, group_jid: str) -> GroupInfo:
        """``get_group_info`` (an IQ round trip to WhatsApp), gated like every client call."""
        from wadaemon.whatsapp.translate import group_info_of  # imports neonize: lazily

        group = normalise_jid(group_jid)
        if not group.endswith("@g.us"):
            raise TransportError(f"{group_jid!r} is not a group JID")
        with self._client_call("group info", wait_s=self.call_wait_s) as client:
            try:
                info = client.get_group_info(_jid_proto(group))
            except Exception as exc:
                raise TransportError(f"group info for {group} failed: {exc}") from exc
        return group_info_of(info)

    # -- internals --------------------------------------------------------------------------

    @contextmanager
    def _client_call(self, what: str, *, wait_s: float | None) -> Iterator[Any]:
        """The client, for one call, while it is live and Go's map is not being written."""
        session = self._session
        if session is None or not session.live:
            raise TransportError(f"account {self.account_id} is not connected: no {what}")
        if not _CLIENT_MAP.acquire_shared(wait_s):
            raise TransportError(f"account {self.account_id}: another account is starting or "
                                 f"stopping; {what} not attempted")
        try:
            if not session.live:  # closed while we waited: stop is about to touch Go
                raise TransportError(f"account {self.account_id} is not connected: no {what}")
            yield session.client
        finally:
            _CLIENT_MAP.release_shared()

    def _open_locked(self, sink: RawEventSink, pairing: _PairWatch | None) -> _Session:
        """A new session (new NewClient) connecting on its own thread; ``_lifecycle`` held."""
        previous = self._session
        if previous is not None and not previous.ended.is_set():
            raise TransportError(f"account {self.account_id}: the previous neonize "
                                 "connection is still running or stopping")
        neonize = _neonize()
        self.session.prepare()
        client = neonize.NewClient(self.session.name, props=self._device_props(neonize),
                                   uuid=self.session.client_key)
        finaliser = getattr(client, "_stop_finalizer", None)
        if finaliser is not None:
            # It would call Go's Stop from the garbage collector's thread, outside the
            # client-map lock; stop() is always called explicitly instead.
            finaliser.detach()
        session = _Session(self.account_id, client, _pb(), sink, self.capture, pairing)
        self._subscribe(session)
        self._session = session
        with _CLIENT_MAP.exclusive():
            session.thread = threading.Thread(target=self._connect, args=(session,),
                                              name=f"neonize-{self.account_id}", daemon=True)
            session.thread.start()
            if not session.settled.wait(self.start_settle_s):
                log.debug("[neonize] accountId=%s no callback from Go yet; the client stays "
                          "gated until one arrives", self.account_id)
        return session

    def _subscribe(self, session: _Session) -> None:
        """Every handler before connect(): the subscribed set is sent to Go once."""
        client = session.client
        for name in SUBSCRIBED_EVENTS:
            handler = session.make_handler(name)
            session.handlers[name] = handler
            client.event(getattr(session.pb, name))(handler)

        def on_qr(client_: Any, data: bytes) -> None:
            session.on_qr(client_, data)

        def on_login_status(uuid: Any, status: Any) -> None:
            session.on_login_status(uuid, status)

        session.handlers["QR"] = on_qr
        client.event.qr(on_qr)
        if hasattr(type(client), "_NewClient__onLoginStatus"):
            # connect() wraps self.__onLoginStatus at call time: the instance attribute wins.
            client._NewClient__onLoginStatus = on_login_status
            session.handlers["LoginStatus"] = on_login_status

    def _connect(self, session: _Session) -> None:
        """The connection thread: connect() returns only once Go's Neonize() does (after Stop)."""
        try:
            session.client.connect()
        except Exception as exc:
            log.error("[neonize] accountId=%s connection failed: %s: %s", self.account_id,
                      type(exc).__name__, exc)
        else:
            log.info("[neonize] accountId=%s connection ended", self.account_id)
        finally:
            session.end()
        # Ended by stop() or a logout: reason already set, nothing to do (and no lock taken:
        # stop() holds _lifecycle while it waits for this thread).
        if session.closed_reason == CONNECTION_ENDED and session.pairing is None:
            self._schedule_reconnect(session)

    def _schedule_reconnect(self, ended: _Session) -> None:
        with self._lifecycle:
            if not self._wanted or self._session is not ended:
                return
            if time.monotonic() - ended.started_at > self.reconnect_max_s:
                self._reconnect_delay = self.reconnect_min_s  # it ran a while: start over
            delay = self._reconnect_delay
            self._reconnect_delay = min(self.reconnect_max_s, delay * 2)
            log.warning("[neonize] accountId=%s connection ended unexpectedly; reconnecting in "
                        "%.0f s", self.account_id, delay)
            timer = threading.Timer(delay, self._reconnect, args=(ended,))
            timer.daemon = True
            self._reconnect_timer = timer
            timer.start()

    def _reconnect(self, ended: _Session) -> None:
        with self._lifecycle:
            if not self._wanted or self._session is not ended:
                return  # stopped (or restarted) meanwhile
            if not self.licence():
                log.warning("[neonize] accountId=%s: the ownership lease is no longer held: not reconnecting",
                            self.account_id)
                return
            self._reconnect_timer = None
            if not self.session.paired_jid():  # never connect into a QR loop stop can't end
                log.error("[neonize] accountId=%s lost its paired device; not reconnecting",
                          self.account_id)
                self._report_unpaired(ended.sink)
                return
            try:
                self._open_locked(ended.sink, pairing=None)
            except Exception:
                log.exception("[neonize] accountId=%s reconnect failed", self.account_id)

    def _shut_down(self, session: _Session, deadline: float) -> None:
        """Disconnect under the shared side of the map lock (the slow part, ~60 s when a dial
        hangs, overlapping other accounts' calls), then Stop — which removes the client from
        Go's map — under the exclusive side, repeated until connect() returns, in case Go had
        not registered the client yet when the first Stop came."""
        try:
            if session.registered.is_set() and not session.ended.is_set():
                with _CLIENT_MAP.shared():
                    session.client.disconnect()
            while not session.ended.is_set():
                with _CLIENT_MAP.exclusive():
                    session.client.stop()
                if session.ended.wait(1.0) or time.monotonic() > deadline:
                    break
        except Exception:
            log.exception("[neonize] accountId=%s stop failed", self.account_id)

    def _request_pair_code(self, watch: _PairWatch, digits: str,
                           on_code: Callable[[str], None], deadline: float) -> None:
        """whatsmeow accepts PairPhone once connected and showing QR codes: wait for the first."""
        while not watch.qr_seen.wait(0.2):
            if watch.finished.is_set() or time.monotonic() > deadline:
                return
        try:
            with self._client_call("pair code request", wait_s=self.call_wait_s) as client:
                code = str(client.PairPhone(digits, show_push_notification=True))
        except Exception as exc:
            watch.fail(f"pair code request failed: {exc}")
            return
        on_code(code)

    def _device_props(self, neonize: Any) -> Any:
        """Device properties sent at link time; full history is asked for here or never."""
        props = neonize.DeviceProps(os=DEVICE_OS, platformType=neonize.DeviceProps.CHROME)
        if self.full_history:
            days, size_mb, quota_mb = self.full_sync_limits
            props.requireFullSync = True
            props.historySyncConfig.CopyFrom(neonize.DeviceProps.HistorySyncConfig(
                fullSyncDaysLimit=days, fullSyncSizeMbLimit=size_mb, storageQuotaMb=quota_mb))
        return props

    def _report_unpaired(self, sink: RawEventSink) -> None:
        pb = _pb()
        event = pb.LoggedOut(OnConnect=True, Reason=pb.ConnectFailureReason.LOGGED_OUT)
        session = _Session(self.account_id, None, pb, sink, self.capture, None)
        session.hand_over(RawEvent("LoggedOut", event.SerializeToString()))


def _history_timestamp(method: Any, oldest_ts_ms: int) -> int:
    """The anchor timestamp in the unit ``request_history_sync`` takes: milliseconds when its
    parameter says so (``…_ms``), else seconds (whatsmeow's unit for the request; docs/whatsapp.md)."""
    try:
        params = [p for p in inspect.signature(method).parameters if p != "self"]
    except (TypeError, ValueError):
        params = []
    name = params[3] if len(params) > 3 else ""
    return oldest_ts_ms if name.lower().endswith("ms") else oldest_ts_ms // 1000


def print_terminal_qr(code: str) -> None:
    """The QR code in the terminal (what neonize does by default, with a line saying where to
    scan it). Codes are renewed every ~20 s; each one is printed."""
    import segno

    print("\nScan with WhatsApp > Settings > Linked devices > Link a device:", flush=True)
    segno.make_qr(code).terminal(compact=True)
