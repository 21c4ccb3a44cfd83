"""The translator never raises, whatever bytes or names reach it."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from wadaemon.domain import WhatsAppEvent
from wadaemon.whatsapp import protos as P
from wadaemon.whatsapp.translate import IGNORED_EVENTS, translate
from wadaemon.whatsapp.transport import RawEvent

HANDLED = ["Message", "Receipt", "HistorySync", "Connected", "Disconnected", "LoggedOut",
           "StreamReplaced", "ConnectFailure", "TemporaryBan", "ClientOutdated", "StreamError",
           "OfflineSyncPreview", "OfflineSyncCompleted", "PairStatus", "QR"]
NAMES = st.one_of(st.sampled_from(HANDLED + sorted(IGNORED_EVENTS)), st.text(max_size=20))

SAMPLES = [
    P.raw(P.message_event(chat="123@lid", sender="123:4@lid", sender_alt="4071@s.whatsapp.net",
                          message_id="3A1", content=P.extended_text("hi", quoted_id="3A0"), ts_ms=1)),
    P.raw(P.receipt_event(chat="4071@s.whatsapp.net", sender="4071@s.whatsapp.net",
                          message_ids=["a", "b"], kind="READ", ts_s=1)),
    P.raw(P.history_sync_event("FULL", [P.conversation("4071@s.whatsapp.net", [
        P.web_message(chat="4071@s.whatsapp.net", message_id="x", content=P.image("c"), ts_s=3)])])),
]


def _check(events: list[WhatsAppEvent]) -> None:
    assert isinstance(events, list)
    for event in events:
        msgspec.json.encode(event)


@settings(max_examples=400, deadline=None)
@given(name=NAMES, data=st.binary(max_size=400))
def test_random_bytes_never_raise(name: str, data: bytes) -> None:
    _check(translate("acc", RawEvent(name, data)))


@settings(max_examples=400, deadline=None)
@given(sample=st.sampled_from(SAMPLES), position=st.integers(min_value=0), flip=st.integers(1, 255),
       cut=st.integers(min_value=0))
def test_mutated_genuine_events_never_raise(sample: RawEvent, position: int, flip: int, cut: int) -> None:
    data = bytearray(sample.data)
    data[position % len(data)] ^= flip
    _check(translate("acc", RawEvent(sample.name, bytes(data))))
    _check(translate("acc", RawEvent(sample.name, sample.data[: cut % len(sample.data)])))
