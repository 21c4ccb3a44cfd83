"""The transport's calls through a real service process: on-demand history (answered, delayed,
empty, withheld; closing a dropped queue's gap), sends acknowledged or failed, LID resolution.
The test process is the client here (``SimServerTransport`` with a recording sink), so each
answer is checked event by event."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from tests.procs import SimServer, wait_until
from wadaemon.domain import HistoryChunkEvent, MessageEvent
from wadaemon.whatsapp.simclient import SimServerTransport, reconnect_delay
from wadaemon.whatsapp.translate import translate
from wadaemon.whatsapp.transport import RawEvent, TransportError

pytestmark = pytest.mark.slow

ACC = "sim-1"
WAIT = 30.0


class Sink:
    def __init__(self) -> None:
        self.raws: list[RawEvent] = []
        self._cond = threading.Condition()

    def deliver(self, raw: RawEvent) -> None:
        with self._cond:
            self.raws.append(raw)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[RawEvent]], bool]) -> list[RawEvent]:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.raws), WAIT), [r.name for r in self.raws]
            return list(self.raws)

    def on_demand(self) -> list[HistoryChunkEvent]:
        with self._cond:
            raws = list(self.raws)
        return [e for raw in raws for e in translate(ACC, raw)
                if isinstance(e, HistoryChunkEvent) and e.sync_type == "ON_DEMAND"]


@pytest.fixture
def connected(simserver: Callable[..., SimServer]) -> Iterator[tuple[SimServer, SimServerTransport, Sink]]:
    sim = simserver(accounts=1, chats=3, history=60, pairing_history=4, history_delay_ms=200)
    transport = SimServerTransport(ACC, (sim.host, sim.port), "tester")
    sink = Sink()
    transport.start(sink)
    try:
        sink.wait_for(lambda raws: sum(r.name == "HistorySync" for r in raws) >= 2)  # pairing + push names
        yield sim, transport, sink
    finally:
        transport.stop()


def test_on_demand_history_answered_after_the_delay_then_empty(
        connected: tuple[SimServer, SimServerTransport, Sink]) -> None:
    sim, transport, sink = connected
    truth = sim.truth(ACC)
    chat = truth.messages[0].chat
    in_chat = sorted((m for m in truth.messages if m.chat == chat), key=lambda m: m.ts_ms)
    oldest_paired = next(m for m in in_chat if m.origin == "pairing")
    transport.request_history(oldest_paired.chat_pn or chat, oldest_paired.id, oldest_paired.from_me,
                              oldest_paired.ts_ms, 50)
    sink.wait_for(lambda raws: len(sink.on_demand()) == 1)
    (answer,) = sink.on_demand()
    assert [m.message_id for m in answer.conversations[0].messages] == [
        m.id for m in reversed(in_chat) if m.origin == "archive"]
    oldest = in_chat[0]
    transport.request_history(chat, oldest.id, oldest.from_me, oldest.ts_ms, 50)
    sink.wait_for(lambda raws: len(sink.on_demand()) == 2)
    assert sink.on_demand()[1].conversations[0].messages == ()  # nothing older: an empty answer
    requests = sim.truth(ACC).history_requests
    assert [(r.answered, r.messages) for r in requests] == [(True, len(in_chat) - 4), (True, 0)]


def test_phone_offline_for_history_never_answers(connected: tuple[SimServer, SimServerTransport, Sink]) -> None:
    sim, transport, sink = connected
    sim.phone(ACC, historyAnswers=False, historyDelayMs=0)
    held = sim.truth(ACC).messages[-1]
    transport.request_history(held.chat, held.id, held.from_me, held.ts_ms, 50)
    marker = sim.inject(ACC, chat=0, text="after the request")
    sink.wait_for(lambda raws: any(marker in [e.message_id for e in translate(ACC, r)
                                              if isinstance(e, MessageEvent)] for r in raws))
    assert sink.on_demand() == []
    (request,) = sim.truth(ACC).history_requests
    assert (request.answered, request.oldest_id) == (False, held.id)


def test_an_on_demand_request_closes_a_dropped_queues_gap(
        connected: tuple[SimServer, SimServerTransport, Sink]) -> None:
    sim, transport, _ = connected
    sim.disconnect(ACC)
    wait_until(lambda: sim.summary(ACC).connections == 2, "the transport reconnected by itself")
    transport.stop()
    wait_until(lambda: sim.summary(ACC).connected_client is None, "the transport is gone")
    lost = [sim.inject(ACC, chat=0, text=f"lost {n}") for n in range(3)]
    assert sim.drop_queue(ACC) == 3
    sink2 = Sink()
    transport.start(sink2)
    after = sim.inject(ACC, chat=0, text="after")
    sink2.wait_for(lambda raws: any(after in [e.message_id for e in translate(ACC, r)
                                             if isinstance(e, MessageEvent)] for r in raws))
    truth = sim.truth(ACC)
    assert truth.ids("live") - truth.delivered_ids() == set(lost)
    anchor = next(m for m in truth.messages if m.id == after)
    transport.request_history(anchor.chat, anchor.id, anchor.from_me, anchor.ts_ms, 3)
    sink2.wait_for(lambda raws: any(r.name == "HistorySync" for r in raws))
    answers = [e for raw in sink2.raws for e in translate(ACC, raw) if isinstance(e, HistoryChunkEvent)]
    assert [m.message_id for m in answers[0].conversations[0].messages] == lost[::-1]
    assert sim.truth(ACC).delivered_ids() == sim.truth(ACC).ids() - sim.truth(ACC).ids("archive")


def test_sends_are_acked_or_failed_on_demand_and_lids_resolve(
        connected: tuple[SimServer, SimServerTransport, Sink]) -> None:
    sim, transport, _ = connected
    truth = sim.truth(ACC)
    direct = next(m for m in truth.messages if m.chat_pn)
    sent = transport.send_text(direct.chat_pn, "hello")
    assert sent.message_id.startswith("3EB0")
    held = {m.id: m for m in sim.truth(ACC).messages}
    assert (held[sent.message_id].origin, held[sent.message_id].delivered_to) == ("sent", ["tester"])
    sim.phone(ACC, failSends=["rate limited"])
    with pytest.raises(TransportError, match="rate limited"):
        transport.send_text(direct.chat_pn, "again")
    assert transport.resolve_lid(direct.chat_lid) in {direct.chat_pn, ""}  # "" only for hidden LIDs
    assert transport.resolve_lid("999@lid") == ""


class Revocable:
    """A licence the test revokes; once revoked, being asked is noted."""

    def __init__(self) -> None:
        self.revoked = False
        self.asked_once_revoked = threading.Event()

    def __call__(self) -> bool:
        if self.revoked:
            self.asked_once_revoked.set()
        return not self.revoked


def test_no_reconnect_once_the_licence_is_revoked(connected: tuple[SimServer, SimServerTransport, Sink]) -> None:
    """A process resumed after its lease expired finds its connection closed by the service;
    its link thread must ask the fence before reconnecting, or it replaces the new holder."""
    sim, transport, _ = connected
    licence = Revocable()
    transport.licence = licence
    licence.revoked = True
    sim.disconnect(ACC)
    assert licence.asked_once_revoked.wait(WAIT), "the transport reconnected without asking its licence"
    assert sim.summary(ACC).connections == 1  # no Hello went out after the licence said no


def test_reconnect_backoff_doubles_to_a_ceiling() -> None:
    assert [reconnect_delay(n) for n in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert reconnect_delay(10_000) == 5.0
