"""NeonizeTransport with a real ``NewClient`` and no network.

``NewClient()`` only stores its arguments and builds Python objects (read in neonize 0.5.2's
``client.py``: the Go call that opens the session and dials is ``Neonize()``, made by
``connect()``); everything that would reach Go — connect, disconnect, stop, send, LID lookup,
PairPhone — is replaced by ``FakeGo``. Events are fed through neonize's own dispatcher
(``Event.execute``, which Go calls with a pointer to the serialised protobuf), so the weak
reference trap and the subscription map are the real ones.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from neonize.client import NewClient
from neonize.events import EVENT_TO_INT
from neonize.exc import GetGroupInfoError, SendMessageError
from neonize.proto import Neonize_pb2 as N

from wadaemon.whatsapp import neonize_transport as nt
from wadaemon.whatsapp import protos as P
from wadaemon.whatsapp.capture import CaptureWriter, decode_capture_line
from wadaemon.whatsapp.neonize_transport import NeonizeTransport
from wadaemon.whatsapp.sessions import FileSession, FileSessions
from wadaemon.whatsapp.translate import _HANDLERS as TRANSLATED
from wadaemon.whatsapp.transport import (
    HistoryRequestUnavailable,
    RawEvent,
    SendResult,
    TransportError,
)

ME = "40700000001@s.whatsapp.net"


# --------------------------------------------------------------------------------------------
# Fakes
# --------------------------------------------------------------------------------------------


class FakeGo:
    """Stands in for neonize's Go side: ``connect()`` blocks until ``stop()`` like ``Neonize()``."""

    def __init__(self) -> None:
        self.clients: list[Any] = []
        self.subscribed_at_connect: list[set[int]] = []
        self.calls: list[str] = []
        self.on_connect: Callable[[Any], None] | None = None
        self.stop_works = True
        self.connected = threading.Event()
        self._released: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def released(self, client: Any) -> threading.Event:
        with self._lock:
            return self._released.setdefault(id(client), threading.Event())

    def connect(self, client: Any) -> None:
        self.clients.append(client)
        self.subscribed_at_connect.append(set(client.event.list_func))
        self.calls.append("connect")
        self.connected.set()
        if self.on_connect is not None:
            self.on_connect(client)
        self.released(client).wait(10)

    def disconnect(self, client: Any) -> None:
        self.calls.append("disconnect")

    def stop(self, client: Any) -> None:
        self.calls.append("stop")
        if self.stop_works:
            self.released(client).set()

    def release_all(self) -> None:
        for client in self.clients:
            self.released(client).set()


@pytest.fixture
def go(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGo]:
    fake = FakeGo()

    def connect(self: Any, proxy_settings: Any = None) -> None:
        fake.connect(self)

    def unexpected(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a client call reached Go")

    monkeypatch.setattr(NewClient, "connect", connect)
    monkeypatch.setattr(NewClient, "disconnect", lambda self: fake.disconnect(self))
    monkeypatch.setattr(NewClient, "stop", lambda self: fake.stop(self))
    for name in ("send_message", "get_pn_from_lid", "get_group_info", "PairPhone"):
        monkeypatch.setattr(NewClient, name, unexpected)
    yield fake
    fake.release_all()


class Sink:
    def __init__(self, fail: bool = False, capture: Path | None = None) -> None:
        self.events: list[RawEvent] = []
        self.fail = fail
        self.capture = capture
        self.captured_before: list[bool] = []

    def deliver(self, event: RawEvent) -> None:
        if self.capture is not None:
            lines = self.capture.read_text().splitlines()
            self.captured_before.append(bool(lines) and decode_capture_line(lines[-1]) == event)
        if self.fail:
            raise RuntimeError("journal is on fire")
        self.events.append(event)


def dispatch(client: Any, event: Any) -> None:
    """What Go does: ``execute(uuid, pointer, size, code)`` with the serialised event."""
    data = event.SerializeToString()
    buffer = ctypes.create_string_buffer(data, max(len(data), 1))
    client.event.execute(0, ctypes.addressof(buffer), len(data), EVENT_TO_INT[type(event)])


def make_session_db(path: Path, jid: str | None) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS whatsmeow_device (jid TEXT PRIMARY KEY, "
                   "registration_id BIGINT)")
        if jid is not None:
            db.execute("INSERT INTO whatsmeow_device VALUES (?, 1)", (jid,))
    db.close()


@pytest.fixture
def session_path(tmp_path: Path) -> Path:
    path = tmp_path / "sessions" / "acc1.db"
    path.parent.mkdir()
    make_session_db(path, "40700000001:7@s.whatsapp.net")
    return path


def started(session_path: Path, go: FakeGo, sink: Sink, *, capture: CaptureWriter | None = None,
            full_history: bool = True) -> tuple[NeonizeTransport, Any]:
    transport = NeonizeTransport("acc1", session_path, full_history=full_history, capture=capture)
    transport.start_settle_s = 0.05
    transport.stop_timeout_s = 5.0
    transport.start(sink)
    assert go.connected.wait(5)
    return transport, go.clients[-1]


# --------------------------------------------------------------------------------------------
# Construction and registration
# --------------------------------------------------------------------------------------------


def test_constructing_a_client_does_not_connect(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dial(self: Any, proxy_settings: Any = None) -> None:
        raise AssertionError("connect() called")

    monkeypatch.setattr(NewClient, "connect", no_dial)
    path = tmp_path / "fresh.db"
    client = NewClient(str(path))
    client._stop_finalizer.detach()  # its Stop would be a no-op for an unknown client anyway
    assert not path.exists()  # Go opens the session database only inside connect()
    assert client.connected is False
    assert client.event.list_func == {}


def test_every_handler_is_registered_strongly_before_connect(session_path: Path,
                                                             go: FakeGo) -> None:
    sink = Sink()
    transport, client = started(session_path, go, sink)
    expected = {EVENT_TO_INT[getattr(N, name)] for name in nt.SUBSCRIBED_EVENTS}
    assert go.subscribed_at_connect == [expected]
    assert EVENT_TO_INT[N.QR] not in expected  # QR codes come through the QR callback
    assert not any(isinstance(h, weakref.WeakMethod) for h in client.event.list_func.values())
    # Every event the translator reads is subscribed (QR via the callback), nothing else.
    assert set(nt.SUBSCRIBED_EVENTS) | {"QR"} == set(TRANSLATED)

    gc.collect()
    dispatch(client, P.stream_replaced())
    assert [e.name for e in sink.events] == ["StreamReplaced"]
    transport.stop()


def test_go_log_level_is_set_before_connect(session_path: Path, go: FakeGo,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    go_log = logging.getLogger("neonize.utils.log")
    monkeypatch.setattr(go_log, "level", logging.NOTSET)
    seen: list[int] = []
    go.on_connect = lambda client: seen.append(go_log.level)
    transport, _ = started(session_path, go, Sink())
    assert seen == [logging.WARNING]
    transport.stop()


def test_device_props_ask_for_full_history(session_path: Path, go: FakeGo) -> None:
    transport, client = started(session_path, go, Sink(), full_history=True)
    props = client.device_props
    assert props.requireFullSync is True
    assert props.historySyncConfig.fullSyncDaysLimit == nt.FULL_SYNC_DAYS_LIMIT
    assert props.os == nt.DEVICE_OS
    transport.stop()

    recent_only = NeonizeTransport("acc1", session_path, full_history=False)
    assert recent_only._device_props(nt._neonize()).requireFullSync is False


def test_history_sync_depth_comes_from_the_settings(session_path: Path) -> None:
    from wadaemon.cli import neonize_transport
    from wadaemon.config import load_settings

    settings = load_settings({"WADAEMON_DATA_DIR": str(session_path.parent), "WHATSAPP_HISTORY_SYNC_DAYS": "90",
                              "WHATSAPP_HISTORY_SYNC_SIZE_MB": "512", "WHATSAPP_HISTORY_SYNC_QUOTA_MB": "1024"})
    config = neonize_transport(settings, "acc1")._device_props(nt._neonize()).historySyncConfig
    assert (config.fullSyncDaysLimit, config.fullSyncSizeMbLimit, config.storageQuotaMb) == (90, 512, 1024)


# --------------------------------------------------------------------------------------------
# Event hand-over
# --------------------------------------------------------------------------------------------


def test_event_reaches_capture_then_sink_as_raw_bytes(session_path: Path, go: FakeGo,
                                                      tmp_path: Path) -> None:
    capture_path = tmp_path / "capture" / "acc1.jsonl"
    capture = CaptureWriter(capture_path)
    sink = Sink(capture=capture_path)
    transport, client = started(session_path, go, sink, capture=capture)
    receipt = P.receipt_event(chat="40711111111@s.whatsapp.net", sender="40711111111@s.whatsapp.net",
                              message_ids=["3EB0AA", "3EB0BB"], kind="READ", ts_s=1_700_000_000)
    dispatch(client, P.connected())
    dispatch(client, receipt)

    assert sink.events == [RawEvent("Connected", P.connected().SerializeToString()),
                           RawEvent("Receipt", receipt.SerializeToString())]
    assert sink.captured_before == [True, True]  # the capture line is written before the sink
    lines = capture_path.read_text().splitlines()
    assert [decode_capture_line(line) for line in lines] == sink.events
    transport.stop()
    capture.close()


def test_a_failing_sink_is_logged_not_raised_into_go(session_path: Path, go: FakeGo,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    transport, client = started(session_path, go, Sink(fail=True))
    with caplog.at_level(logging.ERROR, logger="wadaemon.neonize"):
        dispatch(client, P.connected())  # would raise here if the handler let it through
    assert "Connected event could not be journaled" in caplog.text
    assert transport.running  # the connection carries on
    transport.stop()


def test_qr_callback_delivers_a_genuine_qr_event(session_path: Path, go: FakeGo) -> None:
    sink = Sink()
    transport, client = started(session_path, go, sink)
    client.event._qr(client, b"2@abc,def,ghi")
    assert sink.events == [RawEvent("QR", N.QR(Codes=["2@abc,def,ghi"]).SerializeToString())]
    transport.stop()


def test_unpaired_session_is_reported_logged_out_and_not_connected(tmp_path: Path,
                                                                   go: FakeGo) -> None:
    sink = Sink()
    transport = NeonizeTransport("new", tmp_path / "new.db", full_history=True)
    transport.start(sink)
    assert go.calls == []
    assert [e.name for e in sink.events] == ["LoggedOut"]
    event = N.LoggedOut.FromString(sink.events[0].data)
    assert event.OnConnect and event.Reason == N.ConnectFailureReason.LOGGED_OUT
    transport.stop()  # nothing to stop


# --------------------------------------------------------------------------------------------
# The running gate and client calls
# --------------------------------------------------------------------------------------------


def test_calls_without_a_running_client_never_reach_go(session_path: Path, go: FakeGo) -> None:
    never_started = NeonizeTransport("acc1", session_path, full_history=True)
    assert never_started.resolve_lid("123456789@lid") == ""
    with pytest.raises(TransportError, match="not connected"):
        never_started.send_text("40711111111@s.whatsapp.net", "hi")

    transport, client = started(session_path, go, Sink())
    assert not transport.running  # no callback from Go yet: registration not proven
    assert transport.resolve_lid("123456789@lid") == ""
    with pytest.raises(TransportError, match="not connected"):
        transport.send_text("40711111111@s.whatsapp.net", "hi")

    with pytest.raises(TransportError, match="not connected"):
        transport.group_info("120363000000000001@g.us")

    dispatch(client, P.connected())
    assert transport.running
    transport.stop()
    assert not transport.running
    assert transport.resolve_lid("123456789@lid") == ""
    with pytest.raises(TransportError, match="not connected"):
        transport.send_text("40711111111@s.whatsapp.net", "hi")
    with pytest.raises(TransportError, match="not connected"):
        transport.group_info("120363000000000001@g.us")


def test_logged_out_closes_the_gate(session_path: Path, go: FakeGo) -> None:
    transport, client = started(session_path, go, Sink())
    dispatch(client, P.connected())
    dispatch(client, P.logged_out())
    dispatch(client, P.disconnected())  # later callbacks do not reopen it
    assert not transport.running
    assert transport.resolve_lid("123456789@lid") == ""
    transport.stop()


def test_resolve_lid(session_path: Path, go: FakeGo, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def get_pn_from_lid(self: Any, jid: Any) -> Any:
        asked.append(f"{jid.User}@{jid.Server}")
        return P.jid("40722222222") if jid.User == "111" else P.jid("", "")

    monkeypatch.setattr(NewClient, "get_pn_from_lid", get_pn_from_lid)
    transport, client = started(session_path, go, Sink())
    dispatch(client, P.connected())
    assert transport.resolve_lid("111:3@lid") == "40722222222@s.whatsapp.net"
    assert transport.resolve_lid("222@lid") == ""  # unknown: User == ""
    assert transport.resolve_lid("40733333333@s.whatsapp.net") == ""  # not a LID: not asked
    assert asked == ["111@lid", "222@lid"]
    transport.stop()


def test_group_info(session_path: Path, go: FakeGo, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def get_group_info(self: Any, jid: Any) -> Any:
        asked.append(f"{jid.User}@{jid.Server}")
        if jid.User == "120363000000000009":
            raise GetGroupInfoError("item-not-found")
        return P.group_info(group="120363000000000001@g.us", subject="Team",
                            participants=["2000000001:3@lid", "40711111111@s.whatsapp.net"], name_set_s=17)

    monkeypatch.setattr(NewClient, "get_group_info", get_group_info)
    transport, client = started(session_path, go, Sink())
    dispatch(client, P.connected())
    info = transport.group_info("120363000000000001@g.us")
    assert (info.jid, info.subject, info.subject_set_ms) == ("120363000000000001@g.us", "Team", 17_000)
    assert info.participants == ("2000000001@lid", "40711111111@s.whatsapp.net")
    with pytest.raises(TransportError, match="item-not-found"):
        transport.group_info("120363000000000009@g.us")
    with pytest.raises(TransportError, match="not a group"):
        transport.group_info("40711111111@s.whatsapp.net")  # refused before reaching Go
    assert asked == ["120363000000000001@g.us", "120363000000000009@g.us"]
    transport.stop()


def test_send_text(session_path: Path, go: FakeGo, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, str]] = []

    def send_message(self: Any, to: Any, message: str) -> Any:
        sent.append((f"{to.User}@{to.Server}", message))
        if message == "fail":
            raise SendMessageError("server said no")
        return N.SendResponse(ID="3EB0CAFE", Timestamp=1_700_000_123)

    monkeypatch.setattr(NewClient, "send_message", send_message)
    transport, client = started(session_path, go, Sink())
    dispatch(client, P.connected())

    result = transport.send_text("40711111111@s.whatsapp.net", "salut")
    assert result == SendResult(message_id="3EB0CAFE", ts_ms=1_700_000_123_000)
    transport.send_text("40711111111", "bare number")
    with pytest.raises(TransportError, match="server said no"):
        transport.send_text("40711111111@s.whatsapp.net", "fail")
    with pytest.raises(TransportError, match="not a WhatsApp JID"):
        transport.send_text("", "nobody")
    assert [to for to, _ in sent] == ["40711111111@s.whatsapp.net"] * 3
    transport.stop()


def test_request_history_is_unavailable_in_neonize_0_5_2(session_path: Path,
                                                          go: FakeGo) -> None:
    assert not hasattr(NewClient, "request_history_sync")
    transport, client = started(session_path, go, Sink())
    dispatch(client, P.connected())
    assert transport.supports_history_requests is False
    with pytest.raises(HistoryRequestUnavailable, match=r"neonize 0\.5\.2 cannot"):
        transport.request_history("40711111111@s.whatsapp.net", "3EB0OLD", False,
                                  1_700_000_000_000, 50)
    assert go.calls == ["connect"]  # nothing was sent, to the own chat or anywhere
    transport.stop()


def test_request_history_uses_the_library_method_when_present(
        session_path: Path, go: FakeGo, monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[tuple[Any, ...]] = []

    def request_history_sync(self: Any, chat: Any, message_id: str, from_me: bool,
                             timestamp: int, count: int = 50) -> None:
        requested.append((f"{chat.User}@{chat.Server}", message_id, from_me, timestamp, count))

    monkeypatch.setattr(NewClient, "request_history_sync", request_history_sync, raising=False)
    transport, client = started(session_path, go, Sink())
    with pytest.raises(TransportError, match="not connected"):
        transport.request_history("40711111111@s.whatsapp.net", "3EB0OLD", True,
                                  1_700_000_000_500, 20)
    dispatch(client, P.connected())
    assert transport.supports_history_requests is True
    transport.request_history("40711111111@s.whatsapp.net", "3EB0OLD", True,
                              1_700_000_000_500, 20)
    assert requested == [("40711111111@s.whatsapp.net", "3EB0OLD", True, 1_700_000_000, 20)]
    transport.stop()


# --------------------------------------------------------------------------------------------
# Stop and restart
# --------------------------------------------------------------------------------------------


def test_stop_disconnects_then_stops_and_start_again_uses_a_fresh_client(
        session_path: Path, go: FakeGo) -> None:
    sink = Sink()
    transport, first = started(session_path, go, sink)
    dispatch(first, P.connected())
    transport.stop()
    assert go.calls == ["connect", "disconnect", "stop"]
    transport.stop()  # idempotent
    assert go.calls == ["connect", "disconnect", "stop"]

    go.connected.clear()
    transport.start(sink)
    assert go.connected.wait(5)
    second = go.clients[-1]
    assert second is not first
    assert not transport.running  # the new session's gate opens on its own first callback
    dispatch(first, P.connected())  # a late callback of the old client opens nothing
    assert not transport.running
    dispatch(second, P.connected())
    assert transport.running
    transport.stop()


def test_stop_gives_up_waiting_after_its_timeout(session_path: Path, go: FakeGo,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    go.stop_works = False  # Go's Stop hangs (a dial that never returns)
    transport, _ = started(session_path, go, Sink())
    transport.stop_timeout_s = 0.3
    with caplog.at_level(logging.ERROR, logger="wadaemon.neonize"):
        transport.stop()
    assert "did not stop within" in caplog.text
    with pytest.raises(TransportError, match="still running or stopping"):
        transport.start(Sink())
    go.release_all()


def test_an_unexpected_end_of_connect_reconnects_with_a_fresh_client(
        session_path: Path, go: FakeGo, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[Any] = []

    def connect(self: Any, proxy_settings: Any = None) -> None:
        attempts.append(self)
        if len(attempts) == 1:
            raise AttributeError("'int' object has no attribute 'decode'")  # 0.5.2's error path
        go.connect(self)

    monkeypatch.setattr(NewClient, "connect", connect)
    transport = NeonizeTransport("acc1", session_path, full_history=True)
    transport.start_settle_s = 0.05
    transport.reconnect_min_s = 0.05
    with caplog.at_level(logging.WARNING, logger="wadaemon.neonize"):
        transport.start(Sink())
        assert go.connected.wait(5)
    assert "reconnecting in" in caplog.text
    assert len(attempts) == 2 and attempts[0] is not attempts[1]
    dispatch(attempts[1], P.connected())
    assert transport.running
    transport.stop()
    assert go.calls == ["connect", "disconnect", "stop"]  # and no reconnect after a stop
    assert len(attempts) == 2


def test_no_reconnect_once_the_licence_is_revoked(session_path: Path, go: FakeGo,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The transport's own reconnect asks the lease's fence first (``Licence``)."""
    attempts: list[Any] = []
    asked = threading.Event()

    def failing_connect(self: Any, proxy_settings: Any = None) -> None:
        attempts.append(self)
        raise RuntimeError("no network")

    def licence() -> bool:
        asked.set()
        return False  # the lease was lost while the connection was down

    monkeypatch.setattr(NewClient, "connect", failing_connect)
    transport = NeonizeTransport("acc1", session_path, full_history=True, licence=licence)
    transport.start_settle_s = 0.05
    transport.reconnect_min_s = 0.05
    transport.start(Sink())
    assert asked.wait(5), "the reconnect did not ask its licence"
    transport.stop()
    assert len(attempts) == 1


def test_stop_cancels_a_pending_reconnect(session_path: Path, go: FakeGo,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def failing_connect(self: Any, proxy_settings: Any = None) -> None:
        attempts.append(self)
        raise RuntimeError("no network")

    monkeypatch.setattr(NewClient, "connect", failing_connect)
    transport = NeonizeTransport("acc1", session_path, full_history=True)
    transport.start_settle_s = 0.05
    transport.reconnect_min_s = 0.3
    transport.start(Sink())
    transport.stop()
    threading.Event().wait(0.5)
    assert len(attempts) == 1


# --------------------------------------------------------------------------------------------
# Pairing
# --------------------------------------------------------------------------------------------


def login_status(client: Any, status: str) -> None:
    """What Go calls when whatsmeow's QR channel ends (``success``, ``timeout``, ``err-…``)."""
    text = ctypes.create_string_buffer(status.encode())
    client._NewClient__onLoginStatus(0, ctypes.addressof(text))


def complete_pairing(client: Any, session: Path) -> None:
    make_session_db(session, "40712345678:9@s.whatsapp.net")  # whatsmeow saves the device
    login_status(client, "success")
    dispatch(client, P.pair_status("40712345678:9@s.whatsapp.net"))
    dispatch(client, P.connected())


def test_pair_with_phone_number_shows_the_pair_code(tmp_path: Path, go: FakeGo,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    session = tmp_path / "acc2.db"
    requested: list[tuple[str, bool]] = []

    def pair_phone(self: Any, phone: str, show_push_notification: bool) -> str:
        requested.append((phone, show_push_notification))
        threading.Timer(0.05, complete_pairing, args=(self, session)).start()
        return "ABCD-1234"

    monkeypatch.setattr(NewClient, "PairPhone", pair_phone)
    go.on_connect = lambda client: client.event._qr(client, b"2@first-code")
    transport = NeonizeTransport("acc2", session, full_history=True)
    codes: list[str] = []
    qr_shown: list[str] = []
    jid = transport.pair("+40 712 345 678", on_code=codes.append, on_qr=qr_shown.append)

    assert jid == "40712345678@s.whatsapp.net"
    assert requested == [("40712345678", True)]
    assert codes == ["ABCD-1234"]
    assert qr_shown == []  # phone pairing shows the code, not QR codes
    assert go.calls[-1] == "stop"
    assert go.subscribed_at_connect[0] == {EVENT_TO_INT[getattr(N, n)]
                                           for n in nt.SUBSCRIBED_EVENTS}


def test_pair_with_qr_code(tmp_path: Path, go: FakeGo) -> None:
    session = tmp_path / "acc3.db"

    def show_qr_then_pair(client: Any) -> None:
        client.event._qr(client, b"2@qr-code")
        complete_pairing(client, session)

    go.on_connect = show_qr_then_pair
    shown: list[str] = []
    sink = Sink()
    transport = NeonizeTransport("acc3", session, full_history=True)
    jid = transport.pair(None, on_code=lambda code: None, on_qr=shown.append, sink=sink)
    assert jid == "40712345678@s.whatsapp.net"
    assert shown == ["2@qr-code"]
    assert [e.name for e in sink.events] == ["QR", "PairStatus", "Connected"]


def test_pair_reports_failure(tmp_path: Path, go: FakeGo,
                              caplog: pytest.LogCaptureFixture) -> None:
    go.on_connect = lambda client: login_status(client, "timeout")
    transport = NeonizeTransport("acc4", tmp_path / "acc4.db", full_history=True)
    with caplog.at_level(logging.ERROR, logger="wadaemon.neonize"):
        assert transport.pair(None, on_code=lambda code: None, on_qr=lambda code: None) == ""
    assert "pairing ended: timeout" in caplog.text
    assert transport.pair("12", on_code=lambda code: None) == ""  # not a phone number


def test_pair_when_already_paired_does_not_connect(session_path: Path, go: FakeGo) -> None:
    transport = NeonizeTransport("acc1", session_path, full_history=True)
    assert transport.pair(None, on_code=lambda code: None) == "40700000001@s.whatsapp.net"
    assert go.calls == []


# --------------------------------------------------------------------------------------------
# Session databases
# --------------------------------------------------------------------------------------------


def test_paired_accounts(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    make_session_db(sessions / "paired.db", ME)
    make_session_db(sessions / "zeta.db", "40700000002:3@s.whatsapp.net")
    make_session_db(sessions / "logged-out.db", None)  # whatsmeow deleted the device
    with sqlite3.connect(sessions / "other.db") as db:
        db.execute("CREATE TABLE unrelated (x)")
    db.close()
    (sessions / "garbage.db").write_bytes(b"this is not sqlite at all, not even close" * 4)
    (sessions / "notes.txt").write_text("ignored")

    assert FileSessions(sessions).paired_accounts() == ["paired", "zeta"]
    assert FileSessions(sessions).session("zeta").paired_jid() == "40700000002@s.whatsapp.net"
    assert FileSession("missing", sessions / "missing.db").paired_jid() == ""
    assert FileSessions(tmp_path / "nowhere").paired_accounts() == []
