"""The simulated phone: determinism, history shape, on-demand answers, connection lifecycle."""

from __future__ import annotations

import re
import threading
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from neonize.proto import Neonize_pb2 as N

from wadaemon.domain import (
    ChatAddress,
    ConnectionEvent,
    EditEvent,
    GroupChangeEvent,
    HistoryChunkEvent,
    MessageEvent,
    OfflineSyncEvent,
    PairingEvent,
    ReactionEvent,
    ReceiptEvent,
    RevokeEvent,
    WhatsAppEvent,
)
from wadaemon.whatsapp.simphone import ON_DEMAND_MAX, SimPhone
from wadaemon.whatsapp.translate import translate
from wadaemon.whatsapp.transport import HistoryRequestUnavailable, RawEvent, TransportError

ACC = "acc"
WAIT = 10.0  # failsafe only: every wait below returns as soon as its condition holds


class Recorder:
    """A sink that records what it was handed, and on which thread."""

    def __init__(self) -> None:
        self.raws: list[RawEvent] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def deliver(self, raw: RawEvent) -> None:
        with self._lock:
            self.raws.append(raw)
            self.threads.add(threading.current_thread().name)

    def events(self) -> list[WhatsAppEvent]:
        with self._lock:
            raws = list(self.raws)
        return [event for raw in raws for event in translate(ACC, raw)]

    def live(self) -> list[WhatsAppEvent]:
        return [e for e in self.events() if not isinstance(e, HistoryChunkEvent)]


@pytest.fixture
def phones() -> Iterator[list[SimPhone]]:
    started: list[SimPhone] = []
    yield started
    for phone in started:
        phone.stop()


def run(phones: list[SimPhone], phone: SimPhone) -> Recorder:
    recorder = Recorder()
    phones.append(phone)
    phone.start(recorder)
    assert phone.wait_idle(WAIT)
    return recorder


def chunks(phone: SimPhone) -> list[HistoryChunkEvent]:
    out = []
    for raw in phone.pairing_history():
        (event,) = translate(ACC, raw)
        assert isinstance(event, HistoryChunkEvent)
        out.append(event)
    return out


# ---------------------------------------------------------------------------------------------
# Population and pairing history
# ---------------------------------------------------------------------------------------------


def test_same_seed_same_events_other_seed_differs() -> None:
    def history(seed: int) -> list[RawEvent]:
        return list(SimPhone(ACC, seed, chats=10, history_messages=300, chunk_size=70).pairing_history())

    assert history(7) == history(7)
    assert history(7) != history(8)


def test_population_has_every_kind_and_unique_jids() -> None:
    phone = SimPhone(ACC, 1, chats=40)
    kinds = {chat.kind for chat in phone.chats}
    assert kinds == {"pn", "lid", "group"}
    assert any(chat.alt_hidden for chat in phone.chats)
    jids = [chat.jid for chat in phone.chats]
    assert len(set(jids)) == len(jids)
    for chat in phone.chats_of("group"):
        assert chat.jid.endswith("@g.us") and len(chat.participants) >= 3
    for chat in phone.chats_of("lid"):
        assert chat.jid == chat.lid and chat.pn.endswith("@s.whatsapp.net")


def test_history_chunks_shape_and_progress() -> None:
    phone = SimPhone(ACC, 3, chats=9, history_messages=500, chunk_size=45, bootstrap_per_chat=5,
                     recent_per_chat=20)
    history = chunks(phone)
    sizes = [sum(len(c.messages) for c in chunk.conversations) for chunk in history]
    assert sum(sizes) == 500
    assert all(0 < size <= 45 for size in sizes[:-1]) and sizes[-1] == 0  # PUSH_NAME last
    types = [chunk.sync_type for chunk in history]
    assert types[0] == "INITIAL_BOOTSTRAP" and types[-1] == "PUSH_NAME"
    order = {"INITIAL_BOOTSTRAP": 0, "RECENT": 1, "FULL": 2, "PUSH_NAME": 3}
    assert [order[t] for t in types] == sorted(order[t] for t in types)
    assert {"RECENT", "FULL"} <= set(types)
    assert [chunk.chunk_order for chunk in history] == list(range(1, len(history) + 1))
    progress = [chunk.progress for chunk in history]
    assert progress == sorted(progress) and progress[-2:] == [100, 100]
    assert history[0].lid_mappings and history[-1].pushnames


def test_history_messages_match_the_archive() -> None:
    phone = SimPhone(ACC, 5, chats=8, history_messages=160, archive_depth=30, chunk_size=50)
    seen: dict[str, MessageEvent] = {}
    for chunk in chunks(phone):
        for conv in chunk.conversations:
            chat = phone.chat(conv.chat.jid)
            assert conv.is_group == chat.is_group and conv.name == chat.name
            for message in conv.messages:
                assert message.chat.jid == chat.jid and message.source == "history_sync"
                seen[message.message_id] = message
    assert len(seen) == 160
    kinds = set()
    for chat in phone.chats:
        assert len(phone.history_range(chat)) == chat.history == 20
        for index in phone.history_range(chat):
            expected = phone.message_at(chat, index)
            got = seen[expected.message_id]
            assert (got.ts_ms, got.from_me, got.message_type, got.body, got.quoted_message_id) == (
                expected.ts_ms, expected.from_me, expected.message_type, expected.body,
                expected.quoted_id)
            if expected.sender is not None and chat.is_group:
                assert got.sender.jid == expected.sender.lid
            kinds.add(expected.kind)
    assert {"text", "reply", "image"} <= kinds


def test_archive_timestamps_strictly_increase() -> None:
    phone = SimPhone(ACC, 2, chats=3, history_messages=30, archive_depth=10)
    for chat in phone.chats:
        stamps = [phone.message_at(chat, i).ts_ms for i in range(chat.archive_size)]
        assert stamps == sorted(set(stamps))
    with pytest.raises(IndexError):
        phone.message_at(0, phone.chats[0].archive_size)


def test_history_of_100k_messages_streams() -> None:
    phone = SimPhone(ACC, 11, chats=500, history_messages=100_000, chunk_size=1000)
    stream = phone.pairing_history()
    tracemalloc.start()
    try:
        messages = _count(next(stream)) + _count(next(stream))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, peak  # about two chunks' worth, not a 100k-message history
    events = 2
    for raw in stream:  # counted, never held
        count = _count(raw)
        assert count <= 1000
        messages += count
        events += 1
    assert messages == 100_000
    assert events == 101  # 100 full chunks and the PUSH_NAME chunk


def _count(raw: RawEvent) -> int:
    data = N.HistorySync.FromString(raw.data).Data
    return sum(len(conv.messages) for conv in data.conversations)


# ---------------------------------------------------------------------------------------------
# On-demand history
# ---------------------------------------------------------------------------------------------


def test_on_demand_answers_older_than_anchor_at_most_50() -> None:
    phone = SimPhone(ACC, 4, chats=4, history_messages=40, archive_depth=120)
    chat = phone.chats_of("lid")[0]
    oldest = phone.message_at(chat, phone.history_range(chat).start)
    (event,) = translate(ACC, phone.on_demand_answer(chat.pn, oldest.ts_ms, 500))
    assert isinstance(event, HistoryChunkEvent) and event.sync_type == "ON_DEMAND"
    (conv,) = event.conversations
    assert conv.chat == ChatAddress(chat.lid, chat.pn)
    assert len(conv.messages) == ON_DEMAND_MAX
    assert all(m.ts_ms < oldest.ts_ms and m.source == "backfill" for m in conv.messages)
    expected = [phone.message_id(chat, i) for i in range(oldest.index - 1, oldest.index - 51, -1)]
    assert [m.message_id for m in conv.messages] == expected  # newest first, contiguous

    small = translate(ACC, phone.on_demand_answer(chat.jid, oldest.ts_ms, 7))[0]
    assert isinstance(small, HistoryChunkEvent) and len(small.conversations[0].messages) == 7


def test_on_demand_walks_back_to_the_start_of_the_archive() -> None:
    phone = SimPhone(ACC, 4, chats=2, history_messages=10, archive_depth=70)
    chat = phone.chats[0]
    anchor = phone.message_at(chat, phone.history_range(chat).start).ts_ms
    fetched: list[MessageEvent] = []
    while True:
        (event,) = translate(ACC, phone.on_demand_answer(chat.jid, anchor, 50))
        assert isinstance(event, HistoryChunkEvent)
        messages = event.conversations[0].messages
        if not messages:
            break
        fetched.extend(messages)
        anchor = messages[-1].ts_ms
    assert len(fetched) == 70
    assert fetched[-1].message_id == phone.message_id(chat, 0)


def test_on_demand_unknown_chat_answers_empty() -> None:
    phone = SimPhone(ACC, 4, chats=2, history_messages=10)
    (event,) = translate(ACC, phone.on_demand_answer("40700000000@s.whatsapp.net", 10**13, 50))
    assert isinstance(event, HistoryChunkEvent)
    assert event.conversations[0].messages == ()


def test_request_history_delivers_on_the_phone_thread(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 6, chats=3, history_messages=30, archive_depth=40, paired=True)
    recorder = run(phones, phone)
    chat = phone.chats[1]
    oldest = phone.message_at(chat, phone.history_range(chat).start)
    phone.request_history(chat.jid, oldest.message_id, oldest.from_me, oldest.ts_ms, 20)
    assert phone.wait_idle(WAIT)
    answers = [e for e in recorder.events() if isinstance(e, HistoryChunkEvent)]
    assert [a.sync_type for a in answers] == ["ON_DEMAND"]
    assert len(answers[0].conversations[0].messages) == 20
    assert recorder.threads == {f"simphone-{ACC}"}


def test_history_requests_can_be_unavailable(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 6, chats=2, history_messages=4, history_requests=False, paired=True)
    run(phones, phone)
    with pytest.raises(HistoryRequestUnavailable):
        phone.request_history(phone.chats[0].jid, "x", False, 10**13, 10)


# ---------------------------------------------------------------------------------------------
# Lifecycle and live traffic
# ---------------------------------------------------------------------------------------------


def test_first_start_pairs_connects_and_syncs(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 8, chats=4, history_messages=40, chunk_size=15)
    events = run(phones, phone).events()
    assert isinstance(events[0], PairingEvent) and events[0].paired_jid == phone.own.pn
    assert events[1] == ConnectionEvent(ACC, "connected")
    assert events[2:4] == [OfflineSyncEvent(ACC, False, 0), OfflineSyncEvent(ACC, True, 0)]
    history = events[4:]
    assert all(isinstance(e, HistoryChunkEvent) for e in history)
    assert sum(len(c.messages) for e in history if isinstance(e, HistoryChunkEvent)
               for c in e.conversations) == 40


def test_restart_does_not_repeat_pairing_history(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 8, chats=4, history_messages=40)
    run(phones, phone)
    phone.stop()
    again = run(phones, phone)
    assert not any(isinstance(e, HistoryChunkEvent | PairingEvent) for e in again.events())


def test_reconnect_delivers_offline_messages_then_completed(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 9, chats=5, history_messages=0, paired=True)
    recorder = run(phones, phone)
    before = len(recorder.raws)
    phone.disconnect()
    first = phone.emit_inbound(0, "while away 1")
    second = phone.emit_inbound(phone.chats_of("group")[0], "while away 2")
    phone.emit_receipt(1, ["3EB0AAAA"], "read")
    assert phone.wait_idle(WAIT)
    assert phone.held == 3 and not phone.online
    assert [type(e).__name__ for e in translate_all(recorder.raws[before:])] == ["ConnectionEvent"]
    with pytest.raises(TransportError):
        phone.send_text(phone.chats[0].jid, "offline")
    phone.reconnect()
    assert phone.wait_idle(WAIT)
    after = translate_all(recorder.raws[before + 1:])
    assert after[0] == ConnectionEvent(ACC, "connected")
    assert after[1] == OfflineSyncEvent(ACC, completed=False, messages=2)
    assert [e.message_id for e in after[2:4] if isinstance(e, MessageEvent)] == [first, second]
    assert isinstance(after[4], ReceiptEvent)
    assert after[5] == OfflineSyncEvent(ACC, completed=True, messages=2)
    assert phone.held == 0


def test_events_emitted_before_start_arrive_as_offline_sync(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 9, chats=3, history_messages=0, paired=True)
    message_id = phone.emit_inbound(2, "early")
    events = run(phones, phone).events()
    assert events[1] == OfflineSyncEvent(ACC, False, 1)
    assert isinstance(events[2], MessageEvent) and events[2].message_id == message_id


def test_stop_delivers_nothing_more_and_holds_for_next_start(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 9, chats=3, history_messages=0, paired=True)
    recorder = run(phones, phone)
    with pytest.raises(TransportError):
        phone.start(recorder)
    phone.stop()
    count = len(recorder.raws)
    held = phone.emit_inbound(0, "after stop")
    assert len(recorder.raws) == count and phone.held == 1
    again = run(phones, phone)
    assert held in [e.message_id for e in again.events() if isinstance(e, MessageEvent)]


def test_send_text_ids_and_receipts(phones: list[SimPhone]) -> None:
    def session() -> tuple[list[str], list[WhatsAppEvent]]:
        phone = SimPhone(ACC, 12, chats=4, history_messages=0, paired=True)
        recorder = run(phones, phone)
        ids = [phone.send_text(phone.chats[n].pn or phone.chats[n].jid, f"hi {n}").message_id
               for n in range(3)]
        assert phone.wait_idle(WAIT)
        assert [r.message_id for r in phone.sent] == ids
        return ids, recorder.live()

    ids, events = session()
    assert all(re.fullmatch(r"3EB0[0-9A-F]{16}", i) for i in ids) and len(set(ids)) == 3
    assert session() == (ids, events)
    receipts = [e for e in events if isinstance(e, ReceiptEvent)]
    assert [(r.message_ids, r.kind) for r in receipts] == [
        ((i,), kind) for i in ids for kind in ("delivered", "read")]


def test_send_failures(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 12, chats=2, history_messages=0, paired=True, auto_receipts=False)
    recorder = run(phones, phone)
    phone.fail_sends("server said no")
    with pytest.raises(TransportError, match="server said no"):
        phone.send_text(phone.chats[0].jid, "x")
    phone.send_text(phone.chats[0].jid, "y")
    assert phone.wait_idle(WAIT)
    assert not any(isinstance(e, ReceiptEvent) for e in recorder.events())


def test_mutations_and_addressing_per_chat_kind(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 13, chats=16, history_messages=0, paired=True)
    recorder = run(phones, phone)
    lid_chat = next(c for c in phone.chats_of("lid") if not c.alt_hidden)
    pn_chat = phone.chats_of("pn")[0]
    group = phone.chats_of("group")[0]
    sent = phone.emit_outbound(lid_chat, "from the phone")
    phone.emit_edit(lid_chat, sent, "from the phone (edited)")
    phone.emit_reaction(lid_chat, sent, "😂")
    phone.emit_revoke(lid_chat, sent)
    got = phone.emit_inbound(group, "hello group")
    phone.emit_reaction(group, got, "", from_me=True, target_from_me=False)
    phone.emit_inbound(pn_chat, "plain")
    phone.emit_receipt(lid_chat, [sent], "played")
    assert phone.wait_idle(WAIT)
    lid_address = ChatAddress(lid_chat.lid, lid_chat.pn)
    out, edit, react, revoke, group_msg, unreact, plain, played = recorder.live()[3:]
    assert isinstance(out, MessageEvent) and out.from_me and out.chat == lid_address
    assert out.sender == ChatAddress(phone.own.lid, phone.own.pn)
    assert isinstance(edit, EditEvent) and (edit.chat, edit.target_id, edit.new_body) == (
        lid_address, sent, "from the phone (edited)")
    assert isinstance(react, ReactionEvent) and (react.target_id, react.emoji, react.sender_jid) == (
        sent, "😂", lid_chat.pn)
    assert isinstance(revoke, RevokeEvent) and revoke.target_id == sent
    assert isinstance(group_msg, MessageEvent) and group_msg.chat == ChatAddress(group.jid)
    assert group_msg.sender.alt_jid.endswith("@s.whatsapp.net") and group_msg.is_group
    assert isinstance(unreact, ReactionEvent) and unreact.emoji == "" and unreact.sender_jid == phone.own.pn
    assert isinstance(plain, MessageEvent) and plain.chat == ChatAddress(pn_chat.pn, pn_chat.lid)
    assert isinstance(played, ReceiptEvent) and played.kind == "played" and played.chat == lid_address


def test_hidden_lid_until_revealed(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 14, chats=30, history_messages=0, paired=True)
    hidden = next(c for c in phone.chats if c.alt_hidden)
    visible = next(c for c in phone.chats_of("lid") if not c.alt_hidden)
    assert phone.resolve_lid(visible.lid) == visible.pn
    assert phone.resolve_lid(visible.lid.replace("@", ":3@")) == visible.pn
    assert phone.resolve_lid(hidden.lid) == ""
    assert phone.resolve_lid("1@lid") == ""
    recorder = run(phones, phone)
    phone.emit_inbound(hidden, "who am I")
    assert phone.wait_idle(WAIT)
    phone.reveal(hidden)
    phone.emit_inbound(hidden, "now you know")
    assert phone.wait_idle(WAIT)
    before, after = [e for e in recorder.live() if isinstance(e, MessageEvent)]
    assert before.chat == ChatAddress(hidden.lid)
    assert after.chat == ChatAddress(hidden.lid, hidden.pn)
    assert phone.resolve_lid(hidden.lid) == hidden.pn


def test_run_live_is_deterministic_and_paced_on_the_phone_thread(phones: list[SimPhone]) -> None:
    def session() -> list[RawEvent]:
        phone = SimPhone(ACC, 15, chats=6, history_messages=0, paired=True)
        recorder = run(phones, phone)
        assert phone.run_live(rate_per_s=4000, duration_s=0.05) == 200
        assert phone.wait_idle(WAIT)
        assert recorder.threads == {f"simphone-{ACC}"}
        return recorder.raws[3:]

    first = session()
    assert len(first) == 200
    assert first == session()
    kinds = {type(e).__name__ for raw in first for e in translate(ACC, raw)}
    assert kinds == {"MessageEvent", "ReceiptEvent"}


def test_run_live_with_zipf_puts_most_traffic_on_the_first_chats(phones: list[SimPhone]) -> None:
    def per_chat(zipf_s: float) -> Counter[str]:
        phone = SimPhone(ACC, 17, chats=20, history_messages=0, paired=True)
        recorder = run(phones, phone)
        phone.run_live(rate_per_s=20_000, duration_s=0.1, receipt_ratio=0.0, zipf_s=zipf_s)
        assert phone.wait_idle(WAIT)
        phone.stop()
        events = [e for raw in recorder.raws for e in translate(ACC, raw) if isinstance(e, MessageEvent)]
        return Counter(e.chat.jid for e in events)

    uniform, skewed = per_chat(0.0), per_chat(1.2)
    assert sum(uniform.values()) == sum(skewed.values()) == 2000
    assert max(uniform.values()) < 200  # about 100 each
    top_two = sum(n for _, n in skewed.most_common(2))
    assert top_two > 900  # expected (1 + 2**-1.2) / H(20, 1.2) = 0.50 of the traffic, 1004


class Blocking(Recorder):
    """A sink stuck in ``deliver`` until ``release`` (a slow journal); ``entered`` once it is."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def deliver(self, raw: RawEvent) -> None:
        self.entered.set()
        self.release.wait(WAIT)
        super().deliver(raw)


def test_blocking_sink_is_backpressure_and_stop_holds_the_rest(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 16, chats=3, history_messages=0, paired=True)
    phones.append(phone)
    sink = Blocking()
    phone.start(sink)
    assert sink.entered.wait(WAIT)
    ids = [phone.emit_inbound(0, f"m{n}") for n in range(3)]
    assert not phone.wait_idle(0.05)  # the phone thread is stuck in deliver: nothing moves
    stopper = threading.Thread(target=phone.stop)
    stopper.start()
    sink.release.set()
    stopper.join(WAIT)
    delivered = len(sink.raws)
    again = run(phones, phone)
    assert len(sink.raws) == delivered  # nothing after stop returned
    both = sink.events() + again.events()
    assert [e.message_id for e in both if isinstance(e, MessageEvent)] == ids  # none lost or doubled


def test_failing_sink_keeps_the_event(phones: list[SimPhone]) -> None:
    class Failing:
        def deliver(self, raw: RawEvent) -> None:
            raise OSError("journal closed")

    phone = SimPhone(ACC, 17, chats=2, history_messages=5, paired=False)
    phones.append(phone)
    phone.start(Failing())
    assert phone.wait_idle(WAIT)
    assert isinstance(phone.error, OSError)
    phone.stop()
    recorder = run(phones, phone)
    events = recorder.events()
    assert sum(len(c.messages) for e in events if isinstance(e, HistoryChunkEvent)
               for c in e.conversations) == 5


def translate_all(raws: list[RawEvent]) -> list[Any]:
    return [event for raw in raws for event in translate(ACC, raw)]


# ---------------------------------------------------------------------------------------------
# What the simulated service relies on: a shallow pairing history, messages kept on the phone,
# the offline queue's cap and drop, logged / withheld / delayed history answers
# ---------------------------------------------------------------------------------------------


def test_pairing_per_chat_keeps_the_rest_on_the_phone() -> None:
    phone = SimPhone(ACC, 21, chats=4, history_messages=80, archive_depth=0, pairing_per_chat=5)
    assert [(c.history, c.archive_size) for c in phone.chats] == [(5, 20)] * 4
    delivered = {m.message_id for chunk in chunks(phone) for conv in chunk.conversations for m in conv.messages}
    held = {mid: origin for _, mid, _, _, origin in phone.holdings()}
    assert len(held) == 80
    assert delivered == {mid for mid, origin in held.items() if origin == "pairing"}
    assert len(delivered) == 20
    assert chunks(phone)[-2].progress == 100  # progress counts what pairing delivers, not what is held


def test_live_and_sent_messages_are_kept_and_reach_on_demand_answers(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 22, chats=3, history_messages=6, archive_depth=0, paired=True, auto_receipts=False)
    run(phones, phone)
    chat = phone.chats_of("pn")[0]
    inbound = phone.emit_inbound(chat, "one")
    phone.emit_reaction(chat, inbound, "x", target_from_me=False)  # an update: not a message
    sent = phone.send_text(chat.pn, "two").message_id
    newest = phone.emit_outbound(chat, "three")
    kept = [(mid, origin) for c, mid, _, _, origin in phone.holdings() if c is chat and origin != "pairing"]
    assert kept == [(inbound, "live"), (sent, "sent"), (newest, "live")]

    anchor = phone.live_messages[chat.index][-1].ts_ms
    (event,) = translate(ACC, phone.on_demand_answer(chat.jid, anchor, 50))
    assert isinstance(event, HistoryChunkEvent)
    ids = [m.message_id for m in event.conversations[0].messages]
    archive = [phone.message_id(chat, i) for i in reversed(phone.history_range(chat))]
    assert ids == [sent, inbound, *archive]  # newest first, across live and archived
    (two,) = translate(ACC, phone.on_demand_answer(chat.jid, anchor, 2))
    assert isinstance(two, HistoryChunkEvent) and [m.message_id for m in two.conversations[0].messages] == [sent, inbound]
    assert two.conversations[0].messages[0].body == "two"


def test_offline_queue_cap_drops_the_oldest_and_drop_held_drops_all() -> None:
    phone = SimPhone(ACC, 23, chats=2, history_messages=0, paired=True, max_held=3)
    ids = [phone.emit_inbound(0, f"m{n}") for n in range(5)]
    assert (phone.held, phone.dropped) == (3, 2)
    assert phone.drop_held() == 3
    assert (phone.held, phone.dropped) == (0, 5)
    held = {mid for _, mid, _, _, origin in phone.holdings() if origin == "live"}
    assert held == set(ids)  # dropped from the queue, still on the phone


class HistoryNotifier(Recorder):
    """A recorder that signals each HistorySync it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.history = threading.Event()

    def deliver(self, raw: RawEvent) -> None:
        super().deliver(raw)
        if raw.name == "HistorySync":
            self.history.set()


def test_history_requests_are_logged_withheld_or_delayed(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 24, chats=2, history_messages=4, archive_depth=10, paired=True)
    recorder = HistoryNotifier()
    phones.append(phone)
    phone.start(recorder)
    chat = phone.chats[0]
    oldest = phone.message_at(chat, phone.history_range(chat).start)
    phone.history_answers = False
    phone.request_history(chat.jid, oldest.message_id, oldest.from_me, oldest.ts_ms, 5)
    assert phone.wait_idle(WAIT)
    assert [r.answered for r in phone.history_log] == [False]
    assert not recorder.history.is_set()

    phone.history_answers = True
    phone.history_delay_s = 0.05
    phone.request_history(chat.jid, oldest.message_id, oldest.from_me, oldest.ts_ms, 5)
    assert not phone.history_log[-1].answered  # not yet: the answer comes after the delay
    assert recorder.history.wait(WAIT)
    assert (phone.history_log[-1].answered, phone.history_log[-1].messages) == (True, 5)
    answers = [e for e in recorder.events() if isinstance(e, HistoryChunkEvent)]
    assert len(answers) == 1 and len(answers[0].conversations[0].messages) == 5


class LiveAroundHistory(HistoryNotifier):
    """Signals the first live Message, and the first one after a HistorySync."""

    def __init__(self) -> None:
        super().__init__()
        self.first_live = threading.Event()
        self.live_after_history = threading.Event()

    def deliver(self, raw: RawEvent) -> None:
        after = self.history.is_set()
        super().deliver(raw)
        if raw.name == "Message":
            (self.live_after_history if after else self.first_live).set()


def test_on_demand_answer_does_not_wait_behind_a_live_stream(phones: list[SimPhone]) -> None:
    """A real phone answers a history request while its chats keep talking. The demo runs one
    day-long ``run_live`` stream per phone: an answer queued behind it never arrived, and every
    demo backfill timed out. The answer goes out between two live messages, and the stream goes
    on after it."""
    phone = SimPhone(ACC, 26, chats=3, history_messages=6, archive_depth=20, paired=True)
    sink = LiveAroundHistory()
    phones.append(phone)
    phone.start(sink)
    phone.run_live(rate_per_s=100, duration_s=24 * 3600)
    assert sink.first_live.wait(WAIT)  # the stream is delivering
    chat = phone.chats[0]
    oldest = phone.message_at(chat, phone.history_range(chat).start)
    phone.request_history(chat.jid, oldest.message_id, oldest.from_me, oldest.ts_ms, 5)
    assert sink.history.wait(WAIT)  # well inside the daemon's 60 s history-request timeout
    assert sink.live_after_history.wait(WAIT)
    answers = [e for e in sink.events() if isinstance(e, HistoryChunkEvent)]
    assert [(a.sync_type, len(a.conversations[0].messages)) for a in answers] == [("ON_DEMAND", 5)]


def test_on_demand_answer_goes_before_events_already_queued(phones: list[SimPhone]) -> None:
    """The simulated service's traffic queues events one by one: a backlog of them (a slow
    journal) must not delay an answer either."""
    phone = SimPhone(ACC, 27, chats=3, history_messages=6, archive_depth=20, paired=True)
    phones.append(phone)
    sink = Blocking()
    phone.start(sink)
    assert sink.entered.wait(WAIT)  # stuck in delivering Connected: what follows queues up
    ids = [phone.emit_inbound(0, f"m{n}") for n in range(3)]
    chat = phone.chats[1]
    oldest = phone.message_at(chat, phone.history_range(chat).start)
    phone.request_history(chat.jid, oldest.message_id, oldest.from_me, oldest.ts_ms, 5)
    sink.release.set()
    assert phone.wait_idle(WAIT)
    names = [raw.name for raw in sink.raws]
    assert names.count("HistorySync") == 1 and names.index("HistorySync") < names.index("Message")
    assert [e.message_id for e in sink.events() if isinstance(e, MessageEvent)] == ids


def test_live_mix_with_edits_and_reactions(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 25, chats=6, history_messages=0, paired=True)
    recorder = run(phones, phone)
    mix = phone.live_mix(outbound_ratio=0.4, receipt_ratio=0.1, edit_ratio=0.15, reaction_ratio=0.15)
    for _ in range(200):
        phone.emit_live(mix)
    assert phone.wait_idle(WAIT)
    kinds = Counter(type(e).__name__ for e in recorder.live())
    assert {"MessageEvent", "ReceiptEvent", "EditEvent", "ReactionEvent"} <= set(kinds)
    kept = sum(len(v) for v in phone.live_messages.values())
    assert kept == kinds["MessageEvent"]  # updates are not kept as messages


def test_chats_first_seen_live_and_group_info(phones: list[SimPhone]) -> None:
    phone = SimPhone(ACC, 15, chats=4, history_messages=0, paired=True)
    group = phone.add_chat("group", "Echipa")
    stranger = phone.add_chat("lid")
    with pytest.raises(TransportError, match="not connected"):
        phone.group_info(group.jid)
    recorder = run(phones, phone)
    info = phone.group_info(group.jid)
    assert (info.jid, info.subject, info.participants) == (group.jid, "Echipa", tuple(p.lid for p in group.participants))
    with pytest.raises(TransportError, match="item-not-found"):
        phone.group_info("120363000000000077@g.us")
    phone.emit_inbound(stranger, "buna")
    phone.rename_group(group, "Echipa noua")
    assert phone.wait_idle(WAIT)
    message, change = [e for e in recorder.live() if isinstance(e, MessageEvent | GroupChangeEvent)]
    assert isinstance(message, MessageEvent)
    assert (message.chat, message.sender_name) == (ChatAddress(stranger.lid), "")  # no number, no name
    assert change == GroupChangeEvent(ACC, group.jid, "Echipa noua", change.ts_ms)
    assert phone.group_info(group.jid).subject == "Echipa noua"
    assert phone.group_info_asked == [group.jid, group.jid]
    assert phone.resolve_lid(stranger.lid) == ""
