"""A simulated phone: a ``Transport`` that never touches the network.

It emits the same genuine neonize protobufs a linked device receives (built by
``wadaemon.whatsapp.protos``), as ``RawEvent`` bytes, from its own ``threading.Thread`` — the
way neonize's Go thread calls its handlers — so ``sink.deliver`` blocking is real backpressure
and everything behind the transport (journal, translator, actors) runs exactly as in production.

Everything is deterministic from ``seed``:

* a population of chats — direct chats addressed by phone number, direct chats addressed by LID
  (most with the phone number in ``SenderAlt`` / ``pnJID``, some *hidden* until ``reveal``), and
  groups whose participants write as LIDs;
* a per-chat archive, computed on demand from a hash of (seed, chat, index) and never stored:
  index 0 is the oldest message, the newest ``chat.history`` messages go out in the pairing
  history sync and the ``archive_depth`` older ones only in answer to ``request_history`` — so a
  backfill has something real to find. Memory is bounded by one history chunk, whatever the size;
* live traffic (``emit_*``, ``run_live``, ``emit_live``) with ids from counters and timestamps
  from a simulated clock that starts after the newest archived message. Live messages (and texts
  sent through ``send_text``) are *kept on the phone* (``live_messages``), as a real phone keeps
  them: an on-demand history request reaches them too, so a message dropped from the offline
  queue is still recoverable, exactly as on WhatsApp.
* chats first seen live (``add_chat``: a group joined after linking, a stranger known only by
  LID, without a push name), group subjects answered by ``group_info`` and changed by
  ``rename_group``.

While disconnected (before ``start``, after ``disconnect`` or ``stop``), live events are held,
as WhatsApp's server holds them, and delivered on the next connect between an
``OfflineSyncPreview`` and an ``OfflineSyncCompleted``. The held queue has an optional cap
(``max_held``: the oldest are dropped beyond it) and can be dropped on purpose (``drop_held``);
dropped events never reach the device, but their messages stay on the phone.

This one model serves both the in-process transport (this class, for unit tests and benches)
and the simulated WhatsApp service (``wadaemon.whatsapp.simserver``), which runs one SimPhone
per account and plugs each client connection in as the phone's sink: one source of truth for
content, ids, timestamps and addressing.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from wadaemon.domain import GroupInfo
from wadaemon.identity import normalise_jid
from wadaemon.whatsapp import protos as P
from wadaemon.whatsapp.transport import (
    HistoryRequestUnavailable,
    RawEvent,
    RawEventSink,
    SendResult,
    TransportError,
)

log = logging.getLogger("wadaemon.simphone")

#: Newest archived message of chat 0 (2024-12-24); chat c's newest is ``c * CHAT_STAGGER_S`` older.
NEWEST_S = 1_735_000_000
CHAT_STAGGER_S = 337
#: Seconds between consecutive archived messages of one chat (timestamps strictly increase).
GAP_S = 600
#: WhatsApp answers an on-demand history request with at most this many messages.
ON_DEMAND_MAX = 50

FIRST = ("Ana", "Mihai", "Ioana", "Radu", "Elena", "Andrei", "Maria", "Vlad", "Irina", "Dan", "Sofia")
LAST = ("Pop", "Ionescu", "Stan", "Dinu", "Marin", "Tudor", "Rusu", "Matei", "Lazar")
WORDS = ("salut", "ok", "mersi", "maine", "comanda", "pret", "livrare", "azi", "factura", "da",
         "nu", "poate", "perfect", "multumesc", "unde", "cand", "trimit", "acum")
KINDS = ("text", "text", "text", "text", "text", "text", "text", "text", "text", "reply", "reply",
         "image", "video", "audio", "document", "sticker", "location", "contact", "poll")
#: The domain message type each kind translates to.
KIND_TYPES = {"reply": "text"}

ChatKind = Literal["pn", "lid", "group"]
ReceiptName = Literal["delivered", "read", "played"]
#: A queued item; an ``answer`` item only wakes the delivery thread for ``_Session.answers``.
_Item = tuple[Literal["event", "control", "stream", "answer"], Any]


class SinkGone(TransportError):
    """Raised by a sink whose device went away (a closed service connection): the event is held
    for the next connection and delivery stops quietly until the next ``start``."""


class LiveMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message created after pairing (live traffic or ``send_text``), as the phone keeps it.
    ``content`` is the serialised waE2E ``Message``: small, and rebuilt only for on-demand answers."""

    chat_index: int
    message_id: str
    ts_ms: int
    from_me: bool
    sender_index: int  # index into the chat's participants for groups; -1 otherwise
    content: bytes
    origin: Literal["live", "sent"]


class LiveMix:
    """Ratios of a live traffic stream and the phone-sent messages it may still refer to."""

    def __init__(self, outbound_ratio: float, receipt_ratio: float, edit_ratio: float,
                 reaction_ratio: float, cum_weights: list[float]) -> None:
        self.outbound_ratio = outbound_ratio
        self.receipt_ratio = receipt_ratio
        self.edit_ratio = edit_ratio
        self.reaction_ratio = reaction_ratio
        self.cum_weights = cum_weights
        self.recent: deque[tuple[SimChat, str]] = deque(maxlen=64)


class HistoryRequest(msgspec.Struct, kw_only=True):
    """One on-demand history request as the phone received it."""

    chat: str
    oldest_id: str
    oldest_ts_ms: int
    count: int
    answered: bool = False
    messages: int = 0


class _Session:
    """One start..stop span: its own queue and stop flag, so a delivery thread that outlived a
    timed-out ``stop`` can never take events queued for the next session.

    ``answers`` is the priority lane of on-demand history answers: a phone answers a request
    while its chats keep talking, so an answer goes out before anything else queued and between
    two messages of a stream, never after it (a live stream can run for a day, the history
    request times out in a minute). Each answer also queues one ``answer`` item, which wakes an
    idle delivery thread and, when stopping, holds the answers still in the lane."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.answers: deque[RawEvent] = deque()
        self.stopping = threading.Event()


@dataclass(frozen=True)
class SimPerson:
    index: int
    pn: str
    lid: str
    name: str


@dataclass(frozen=True)
class SimChat:
    """A chat as the phone addresses it. ``jid`` is the LID for LID-addressed chats."""

    index: int
    kind: ChatKind
    jid: str
    name: str
    person: SimPerson | None  # the other party of a direct chat
    participants: tuple[SimPerson, ...]
    history: int  # newest messages delivered by the pairing history
    archive_size: int  # history + archive_depth
    alt_hidden: bool  # a LID chat whose phone number no event carries until ``reveal``

    @property
    def is_group(self) -> bool:
        return self.kind == "group"

    @property
    def pn(self) -> str:
        return self.person.pn if self.person else ""

    @property
    def lid(self) -> str:
        return self.person.lid if self.person else ""

    def ts_ms(self, index: int) -> int:
        """Archive timestamp of message ``index`` (whole seconds, as history carries them)."""
        newest = NEWEST_S - self.index * CHAT_STAGGER_S
        return (newest - (self.archive_size - 1 - index) * GAP_S) * 1000


@dataclass(frozen=True)
class SimMessage:
    """One archived message and what the translator should make of it."""

    chat: SimChat
    index: int
    message_id: str
    ts_ms: int
    from_me: bool
    sender: SimPerson | None  # None when from_me
    kind: str
    body: str
    quoted_id: str
    wrapped: bool  # stored in an ephemeralMessage wrapper (history keeps wrappers)

    @property
    def message_type(self) -> str:
        return KIND_TYPES.get(self.kind, self.kind)


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).digest()


class SimPhone:
    """A deterministic simulated phone implementing ``Transport``.

    ``history_messages`` pairing-history messages are spread evenly over ``chats``; each chat
    keeps ``archive_depth`` older messages for on-demand requests. The pairing history goes out
    once, on the first ``start`` unless ``paired=True`` (a session restored from its store):
    newest ``bootstrap_per_chat`` messages of every chat as INITIAL_BOOTSTRAP, the next
    ``recent_per_chat`` as RECENT, the rest as FULL, in chunks of at most ``chunk_size``
    messages, then a PUSH_NAME chunk.

    ``pairing_per_chat`` (the service's ``--pairing-history``) caps what the pairing history
    delivers per chat: each chat then *holds* its share of ``history_messages`` (plus
    ``archive_depth``) but only its newest ``pairing_per_chat`` go out at pairing; the rest are
    reachable only by on-demand requests (the shallow-history situation users report).

    On-demand requests are answered after ``history_delay_s`` (0: at once, on the caller's
    thread), or never while ``history_answers`` is False (the phone is offline); every request
    is logged in ``history_log``. While connected, an answer is delivered ahead of queued events
    and streams (``_Session.answers``); while disconnected it is held like any live event.
    """

    def __init__(self, account_id: str, seed: int = 0, *, chats: int = 12, history_messages: int = 240,
                 archive_depth: int = 100, chunk_size: int = 500, group_ratio: float = 0.2,
                 lid_ratio: float = 0.5, bootstrap_per_chat: int = 10, recent_per_chat: int = 40,
                 paired: bool = False, auto_receipts: bool = True, history_requests: bool = True,
                 stop_timeout_s: float = 10.0, pairing_per_chat: int | None = None,
                 max_held: int | None = None, history_delay_s: float = 0.0, wall_clock: bool = False) -> None:
        if chunk_size < 1 or chats < 0 or history_messages < 0 or archive_depth < 0:
            raise ValueError("chunk_size must be positive; counts must not be negative")
        if chats == 0 and history_messages:
            raise ValueError("history_messages needs at least one chat")
        if (pairing_per_chat is not None and pairing_per_chat < 0) or (max_held is not None and max_held < 0):
            raise ValueError("pairing_per_chat and max_held must not be negative")
        self.account_id = account_id
        self.seed = seed
        self.archive_depth = archive_depth
        self.chunk_size = chunk_size
        self.bootstrap_per_chat = bootstrap_per_chat
        self.recent_per_chat = recent_per_chat
        self.auto_receipts = auto_receipts
        self.history_requests = history_requests
        self.stop_timeout_s = stop_timeout_s
        self.pairing_per_chat = pairing_per_chat
        self.max_held = max_held
        self.history_delay_s = history_delay_s
        self.history_answers = True
        # Numbering plans that cannot collide: the owner 4075…/3…@lid, contacts 4074…/2…@lid.
        self.own = SimPerson(-1, f"4075{seed % 10**7:07d}@s.whatsapp.net",
                             f"3{seed % 10**4:04d}0000000000@lid", "Sim Owner")
        self.chats: tuple[SimChat, ...] = self._population(chats, history_messages, group_ratio, lid_ratio)
        self.history_total = sum(chat.history for chat in self.chats)
        self._by_jid: dict[str, SimChat] = {}
        self._pn_of: dict[str, str] = {}
        for chat in self.chats:
            for form in (chat.jid, chat.pn, chat.lid):
                if form:
                    self._by_jid[form] = chat
            for person in (*chat.participants, *([chat.person] if chat.person else [])):
                self._pn_of[person.lid] = person.pn
        self.sent: list[SendResult] = []
        self.live_messages: dict[int, list[LiveMessage]] = {}
        self.history_log: list[HistoryRequest] = []
        self.dropped = 0  # held events dropped (cap or drop_held): never delivered
        #: Groups ``group_info`` was asked about, in order.
        self.group_info_asked: list[str] = []
        self._subjects: dict[int, str] = {}

        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._clock_ms = (NEWEST_S + 60) * 1000
        #: Live timestamps follow the wall clock (1 ms apart at least) instead of a simulated
        #: clock 1 s per message: what WhatsApp's server does, and what a daemon that compares
        #: message times with its own clock (recent-sync's gaps) needs from the simulation.
        self.wall_clock = wall_clock
        self._counter = itertools.count(1)
        self._revealed: set[int] = set()
        self._send_failures: list[str] = []
        self._history_queued = paired
        self._online = False
        self._held_events: deque[RawEvent] = deque()
        self._held_streams: deque[Iterator[RawEvent]] = deque()
        self._session: _Session | None = None
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # ----------------------------------------------------------------------------------------
    # Population and archive
    # ----------------------------------------------------------------------------------------

    def _person(self, index: int) -> SimPerson:
        name = f"{FIRST[index % len(FIRST)]} {LAST[(index // len(FIRST)) % len(LAST)]}"
        return SimPerson(index, f"4074{self.seed % 100:02d}{index:05d}@s.whatsapp.net",
                         f"2{self.seed % 10**4:04d}{index:010d}@lid", name)

    def _population(self, count: int, history: int, group_ratio: float, lid_ratio: float) -> tuple[SimChat, ...]:
        groups = round(count * group_ratio) if count < 3 else max(1, round(count * group_ratio))
        lids = round((count - groups) * lid_ratio) if count < 3 else max(1, round((count - groups) * lid_ratio))
        group: ChatKind = "group"
        lid: ChatKind = "lid"
        pn: ChatKind = "pn"
        kinds = [group] * groups + [lid] * lids + [pn] * (count - groups - lids)
        random.Random(f"{self.seed}|kinds").shuffle(kinds)
        chats = []
        lid_seen = 0
        for index, kind in enumerate(kinds):
            share = history // count + (1 if index < history % count else 0)
            size = share + self.archive_depth
            if self.pairing_per_chat is not None:
                share = min(share, self.pairing_per_chat)
            if kind == "group":
                members = 3 + _digest(self.seed, "members", index)[0] % 6
                people = tuple(self._person(count + index * 8 + k) for k in range(members))
                chats.append(SimChat(index, kind, f"1203630{self.seed % 10**4:04d}{index:08d}@g.us",
                                     f"Group {index} {WORDS[index % len(WORDS)]}", None, people, share,
                                     size, False))
                continue
            person = self._person(index)
            hidden = kind == "lid" and lid_seen % 4 == 3
            lid_seen += kind == "lid"
            chats.append(SimChat(index, kind, person.lid if kind == "lid" else person.pn, person.name,
                                 person, (), share, size, hidden))
        return tuple(chats)

    def chat(self, ref: int | str | SimChat) -> SimChat:
        """A chat by index, by any of its JIDs, or itself."""
        if isinstance(ref, SimChat):
            return ref
        if isinstance(ref, int):
            return self.chats[ref]
        found = self._by_jid.get(normalise_jid(ref))
        if found is None:
            raise KeyError(f"no simulated chat {ref!r}")
        return found

    def chats_of(self, kind: ChatKind) -> list[SimChat]:
        return [chat for chat in self.chats if chat.kind == kind]

    def message_at(self, ref: int | str | SimChat, index: int) -> SimMessage:
        """Archived message ``index`` of a chat (0 = oldest), computed from the seed."""
        chat = self.chat(ref)
        if not 0 <= index < chat.archive_size:
            raise IndexError(f"chat {chat.index} has {chat.archive_size} archived messages")
        d = _digest(self.seed, chat.index, index)
        kind = KINDS[d[10] % len(KINDS)]
        if kind == "reply" and index == 0:
            kind = "text"
        from_me = d[9] < 77
        sender = None if from_me else (chat.participants[d[15] % len(chat.participants)]
                                       if chat.is_group else chat.person)
        body = f"{WORDS[d[11] % len(WORDS)]} {WORDS[d[12] % len(WORDS)]} #{chat.index}.{index}"
        if kind in ("audio", "sticker"):
            body = ""
        elif kind == "contact":
            body = self._person(d[13]).name
        elif kind == "location":
            body = f"Strada {WORDS[d[13] % len(WORDS)]} {index}"
        quoted = self.message_id(chat, index - 1) if kind == "reply" else ""
        return SimMessage(chat, index, self.message_id(chat, index), chat.ts_ms(index), from_me,
                          sender, kind, body, quoted, d[8] < 26)

    def message_id(self, ref: int | str | SimChat, index: int) -> str:
        return "3A" + _digest(self.seed, self.chat(ref).index, index)[:9].hex().upper()

    def history_range(self, ref: int | str | SimChat) -> range:
        """Archive indices the pairing history delivers (the newest ``chat.history``)."""
        chat = self.chat(ref)
        return range(chat.archive_size - chat.history, chat.archive_size)

    def holdings(self) -> Iterator[tuple[SimChat, str, int, bool, str]]:
        """Every message the phone holds: (chat, id, timestamp ms, from me, origin), origin being
        ``pairing`` (in the pairing history), ``archive`` (only by on-demand request), ``live``
        or ``sent`` (through ``send_text``). Archived ones are computed, never stored."""
        for chat in self.chats:
            pairing = self.history_range(chat)
            for index in range(chat.archive_size):
                msg = self.message_at(chat, index)
                yield chat, msg.message_id, msg.ts_ms, msg.from_me, "pairing" if index in pairing else "archive"
        with self._lock:
            live = [m for chat in self.chats for m in self.live_messages.get(chat.index, ())]
        for m in live:
            yield self.chats[m.chat_index], m.message_id, m.ts_ms, m.from_me, m.origin

    def resolve_lid(self, lid_jid: str) -> str:
        lid = normalise_jid(lid_jid)
        chat = self._by_jid.get(lid)
        if chat is not None and chat.alt_hidden and chat.index not in self._revealed:
            return ""
        return self._pn_of.get(lid, "")

    def add_chat(self, kind: ChatKind, name: str = "") -> SimChat:
        """A chat no pairing history carried, from now on. A ``lid`` chat is a stranger known
        only by LID (no event carries its phone number until ``reveal``) whose push name is
        ``name`` (default: none set); a ``group`` has subject ``name`` and named participants;
        a ``pn`` chat is a new number. Nothing is emitted: the chat shows up with its first
        message."""
        with self._lock:
            index = len(self.chats)
            number = 90_000 + index
            if kind == "group":
                people = tuple(self._person(number * 8 + k) for k in range(3))
                chat = SimChat(index, kind, f"1203631{self.seed % 10**4:04d}{index:08d}@g.us",
                               name, None, people, 0, 0, False)
            else:
                base = self._person(number)
                person = SimPerson(number, base.pn, base.lid, name)
                chat = SimChat(index, kind, person.lid if kind == "lid" else person.pn, name,
                               person, (), 0, 0, kind == "lid")
            self.chats = (*self.chats, chat)
            for form in (chat.jid, chat.pn, chat.lid):
                if form:
                    self._by_jid[form] = chat
            for member in (*chat.participants, *([chat.person] if chat.person else [])):
                self._pn_of[member.lid] = member.pn
        return chat

    def group_info(self, group_jid: str) -> GroupInfo:
        """What WhatsApp answers about one of this phone's groups: subject and members."""
        with self._lock:
            if not self._online:
                raise TransportError("not connected")
            chat = self._by_jid.get(normalise_jid(group_jid))
            if chat is None or not chat.is_group:
                raise TransportError(f"group info for {group_jid}: item-not-found")
            self.group_info_asked.append(chat.jid)
            return GroupInfo(jid=chat.jid, subject=self._subjects.get(chat.index, chat.name),
                             participants=tuple(p.lid for p in chat.participants))

    def rename_group(self, ref: int | str | SimChat, subject: str) -> None:
        """A participant changes the group's subject: a ``GroupInfoEvent`` with the new name."""
        chat = self.chat(ref)
        if not chat.is_group:
            raise ValueError(f"chat {chat.index} is not a group")
        with self._lock:
            self._subjects[chat.index] = subject
            _, ts_ms = self._tick()
            self._emit_locked(P.raw(P.group_info_event(group=chat.jid, subject=subject, ts_s=ts_ms // 1000,
                                                       sender=chat.participants[0].lid)))

    def reveal(self, ref: int | str | SimChat) -> None:
        """From now on events of a hidden-alt chat carry its phone number, and resolve_lid knows it."""
        with self._lock:
            self._revealed.add(self.chat(ref).index)

    def _alt_hidden(self, chat: SimChat) -> bool:
        return chat.alt_hidden and chat.index not in self._revealed

    # ----------------------------------------------------------------------------------------
    # Building events
    # ----------------------------------------------------------------------------------------

    def _content(self, kind: str, body: str, quoted_id: str = "", quoted_participant: str = "") -> Any:
        if kind == "text":
            return P.text(body)
        if kind == "reply":
            return P.extended_text(body, quoted_id=quoted_id, quoted_participant=quoted_participant)
        if kind == "image":
            return P.image(body)
        if kind == "video":
            return P.video(body)
        if kind == "audio":
            return P.audio()
        if kind == "document":
            return P.document(f"{body.split(' #')[0].replace(' ', '_')}.pdf", body)
        if kind == "sticker":
            return P.sticker()
        if kind == "location":
            return P.location(44.43, 26.1, name=body)
        if kind == "contact":
            return P.contact(body, f"BEGIN:VCARD\nFN:{body}\nEND:VCARD")
        if kind == "poll":
            return P.poll(body, ["da", "nu"])
        raise ValueError(f"unknown message kind {kind!r}")

    def _history_message(self, msg: SimMessage) -> Any:
        chat = msg.chat
        content = self._content(msg.kind, msg.body, msg.quoted_id)
        if msg.wrapped:
            content = P.wrap(content, "ephemeralMessage")
        participant = ""
        if chat.is_group:
            participant = self.own.lid if msg.from_me else msg.sender.lid if msg.sender else ""
        return P.web_message(chat=chat.jid, message_id=msg.message_id, content=content,
                             ts_s=msg.ts_ms // 1000, from_me=msg.from_me, participant=participant,
                             push_name="" if msg.from_me or not msg.sender else msg.sender.name)

    def _conversation(self, chat: SimChat, messages: list[Any], end_of_history: int | None = None) -> Any:
        pn = lid = ""
        if chat.kind == "lid":
            lid, pn = chat.lid, ("" if self._alt_hidden(chat) else chat.pn)
        elif chat.kind == "pn":
            pn, lid = chat.pn, chat.lid
        return P.conversation(chat.jid, messages, name=chat.name, pn_jid=pn, lid_jid=lid,
                              end_of_history=end_of_history)

    def _lid_mappings(self) -> list[tuple[str, str]]:
        pairs = []
        for chat in self.chats:
            if chat.kind == "lid" and not self._alt_hidden(chat):
                pairs.append((chat.lid, chat.pn))
            pairs.extend((p.lid, p.pn) for p in chat.participants)
        return pairs

    def _addressing(self, chat: SimChat, sender: SimPerson | None, from_me: bool,
                    device: int) -> tuple[str, str, str]:
        """(Sender, SenderAlt, RecipientAlt) as whatsmeow fills them for this chat and direction:
        LID-addressed chats and groups speak LID with the phone number as the alternate."""
        hidden = self._alt_hidden(chat)
        if from_me:
            recipient_alt = {"lid": "" if hidden else chat.pn, "pn": chat.lid}.get(chat.kind, "")
            if chat.kind == "pn":
                return self.own.pn.replace("@", ":0@"), self.own.lid, recipient_alt
            return self.own.lid.replace("@", ":0@"), self.own.pn, recipient_alt
        person = sender or chat.person
        if person is None:
            raise ValueError("a group message needs a participant")
        if chat.kind == "pn":
            return person.pn.replace("@", f":{device}@"), person.lid, ""
        return person.lid.replace("@", f":{device}@"), "" if hidden else person.pn, ""

    def _realtime(self, chat: SimChat, content: Any, *, message_id: str, ts_ms: int, from_me: bool,
                  sender: SimPerson | None = None, edit_attr: str = "", keep: bool = True) -> RawEvent:
        """A realtime Message event; ``keep``: the phone keeps it (a message, not an update)."""
        if keep:
            self._keep(chat, message_id, ts_ms, from_me, sender, content, "live")
        device = 0 if from_me else _digest(self.seed, chat.index, message_id)[0] % 3
        who, who_alt, recipient_alt = self._addressing(chat, sender, from_me, device)
        pushname = self.own.name if from_me else (sender or chat.person or self.own).name
        return P.raw(P.message_event(chat=chat.jid, sender=who, sender_alt=who_alt,
                                     recipient_alt=recipient_alt, message_id=message_id,
                                     content=content, ts_ms=ts_ms, pushname=pushname,
                                     from_me=from_me, edit_attr=edit_attr))

    def _receipt(self, chat: SimChat, message_ids: list[str], kind: str, ts_ms: int,
                 from_me: bool = False) -> RawEvent:
        sender = None if from_me else (chat.participants[0] if chat.is_group else chat.person)
        who, who_alt, recipient_alt = self._addressing(chat, sender, from_me, 0)
        return P.raw(P.receipt_event(chat=chat.jid, sender=who, sender_alt=who_alt,
                                     recipient_alt=recipient_alt, message_ids=message_ids,
                                     kind=kind, ts_s=ts_ms // 1000, from_me=from_me))

    def _keep(self, chat: SimChat, message_id: str, ts_ms: int, from_me: bool,
              sender: SimPerson | None, content: Any, origin: Literal["live", "sent"]) -> None:
        index = chat.participants.index(sender) if chat.is_group and sender in chat.participants else -1
        self.live_messages.setdefault(chat.index, []).append(LiveMessage(
            chat_index=chat.index, message_id=message_id, ts_ms=ts_ms, from_me=from_me,
            sender_index=index, content=content.SerializeToString(), origin=origin))

    def _live_web_message(self, msg: LiveMessage) -> Any:
        chat = self.chats[msg.chat_index]
        sender = chat.participants[msg.sender_index] if msg.sender_index >= 0 else None
        participant = (self.own.lid if msg.from_me else sender.lid if sender else "") if chat.is_group else ""
        return P.web_message(chat=chat.jid, message_id=msg.message_id,
                             content=P.message_from_bytes(msg.content), ts_s=msg.ts_ms // 1000,
                             from_me=msg.from_me, participant=participant,
                             push_name="" if msg.from_me or not sender else sender.name)

    def _tick(self) -> tuple[int, int]:
        """Next live (sequence, timestamp ms); callers hold the lock."""
        if self.wall_clock:
            self._clock_ms = max(self._clock_ms + 1, int(time.time() * 1000))
        else:
            self._clock_ms += 1000
        return next(self._counter), self._clock_ms

    def _live_id(self, n: int) -> str:
        return "3A" + _digest(self.seed, "live", n)[:9].hex().upper()

    # ----------------------------------------------------------------------------------------
    # Pairing history and on-demand answers (lazy: one chunk in memory at a time)
    # ----------------------------------------------------------------------------------------

    def pairing_history(self) -> Iterator[RawEvent]:
        """The pairing history sync as RawEvents, generated chunk by chunk."""
        phases = (("INITIAL_BOOTSTRAP", 0, self.bootstrap_per_chat),
                  ("RECENT", self.bootstrap_per_chat, self.bootstrap_per_chat + self.recent_per_chat),
                  ("FULL", self.bootstrap_per_chat + self.recent_per_chat, None))
        order = 0
        delivered = 0
        mappings: list[tuple[str, str]] | None = self._lid_mappings()
        for sync_type, low, high in phases:
            batch: list[tuple[SimChat, list[Any]]] = []
            size = 0
            for chat in self.chats:
                top = chat.history if high is None else min(chat.history, high)
                for from_newest in range(low, top):
                    msg = self.message_at(chat, chat.archive_size - 1 - from_newest)
                    if not batch or batch[-1][0] is not chat:
                        batch.append((chat, []))
                    batch[-1][1].append(self._history_message(msg))
                    size += 1
                    if size == self.chunk_size:
                        order, delivered = order + 1, delivered + size
                        yield self._chunk(sync_type, batch, order, delivered, mappings)
                        batch, size, mappings = [], 0, None
            if size or (sync_type == "INITIAL_BOOTSTRAP" and order == 0):
                order, delivered = order + 1, delivered + size
                yield self._chunk(sync_type, batch, order, delivered, mappings)
                mappings = None
        names = [(c.jid, c.name) for c in self.chats if not c.is_group]
        names += [(p.lid, p.name) for c in self.chats for p in c.participants]
        yield P.raw(P.history_sync_event("PUSH_NAME", chunk_order=order + 1, progress=100,
                                         pushnames=names))

    def _chunk(self, sync_type: str, batch: list[tuple[SimChat, list[Any]]], order: int,
               delivered: int, mappings: list[tuple[str, str]] | None) -> RawEvent:
        progress = 100 if delivered >= self.history_total else delivered * 100 // self.history_total
        conversations = [self._conversation(chat, messages) for chat, messages in batch]
        return P.raw(P.history_sync_event(sync_type, conversations, chunk_order=order,
                                          progress=progress, lid_mappings=mappings or ()))

    def on_demand_answer(self, chat_jid: str, oldest_ts_ms: int, count: int, oldest_id: str = "") -> RawEvent:
        """The ON_DEMAND HistorySync answering a request anchored at ``oldest_ts_ms``: the newest
        min(count, 50) messages the phone holds strictly older than the anchor (live ones first,
        being newer than every archived one), newest first.

        A live anchor is found by ``oldest_id`` when given, as the phone finds the request's
        message key: history carries whole seconds, so an anchor taken from an earlier answer
        is up to 999 ms early, and a time comparison would skip the messages of its second."""
        want = max(0, min(count, ON_DEMAND_MAX))
        try:
            chat = self.chat(chat_jid)
        except KeyError:
            conv = P.conversation(normalise_jid(chat_jid), [], end_of_history=1)
            return P.raw(P.history_sync_event("ON_DEMAND", [conv], chunk_order=1, progress=100))
        with self._lock:
            kept = self.live_messages.get(chat.index, [])
            at = next((n for n, m in enumerate(kept) if m.message_id == oldest_id), None) if oldest_id else None
            live = kept[:at] if at is not None else [m for m in kept if m.ts_ms < oldest_ts_ms]
        picked = live[len(live) - min(want, len(live)):]
        messages = [self._live_web_message(m) for m in reversed(picked)]
        newest_ms = chat.ts_ms(chat.archive_size - 1)
        older = max(0, min(chat.archive_size, chat.archive_size - 1 - (newest_ms - oldest_ts_ms) // (GAP_S * 1000)))
        start = max(0, older - (want - len(picked)))
        messages += [self._history_message(self.message_at(chat, i)) for i in range(older - 1, start - 1, -1)]
        more = start > 0 or len(picked) < len(live)
        end = 2 if more else 1  # COMPLETE_ON_DEMAND_SYNC_BUT_MORE_... / COMPLETE_AND_NO_MORE_...
        return P.raw(P.history_sync_event("ON_DEMAND", [self._conversation(chat, messages, end)],
                                          chunk_order=1, progress=100))

    # ----------------------------------------------------------------------------------------
    # Transport protocol
    # ----------------------------------------------------------------------------------------

    def start(self, sink: RawEventSink) -> None:
        with self._lock:
            if self._thread is not None:
                raise TransportError("simulated phone already started")
            session = self._session = _Session()
            self._thread = threading.Thread(target=self._run, args=(sink, session), daemon=True,
                                            name=f"simphone-{self.account_id}")
            if not self._history_queued:
                self._put(("control", P.raw(P.pair_status(self.own.pn.replace("@", ":7@")))))
            self._connect_locked()
            if not self._history_queued:
                self._history_queued = True
                self._put(("stream", self.pairing_history()))
        self._thread.start()

    def stop(self) -> None:
        """Stop delivering. Undelivered events are held (the server would redeliver them) and
        go out on the next ``start``; lifecycle events still queued are dropped."""
        with self._lock:
            thread, self._thread = self._thread, None
            session, self._session = self._session, None
            self._online = False
        if thread is None or session is None:
            return
        session.stopping.set()
        session.queue.put(None)
        thread.join(self.stop_timeout_s)
        if thread.is_alive():
            log.warning("[simphone] %s: delivery thread still blocked in the sink after %.0fs",
                        self.account_id, self.stop_timeout_s)
        self._drain(session)

    def send_text(self, to_jid: str, text: str) -> SendResult:
        with self._lock:
            if not self._online:
                raise TransportError("not connected")
            if self._send_failures:
                raise TransportError(self._send_failures.pop(0))
            n, ts_ms = self._tick()
            result = SendResult("3EB0" + _digest(self.seed, "send", n)[:8].hex().upper(), ts_ms)
            self.sent.append(result)
            chat = self._by_jid.get(normalise_jid(to_jid))
            if chat is not None:
                self._keep(chat, result.message_id, ts_ms, True, None, P.text(text), "sent")
            if self.auto_receipts and chat is not None:
                for kind in ("DELIVERED", "READ"):
                    _, ts = self._tick()
                    self._emit_locked(self._receipt(chat, [result.message_id], kind, ts))
        return result

    def request_history(self, chat_jid: str, oldest_id: str, oldest_from_me: bool,
                        oldest_ts_ms: int, count: int) -> None:
        if not self.history_requests:
            raise HistoryRequestUnavailable("this simulated phone refuses history requests")
        with self._lock:
            if not self._online:
                raise TransportError("not connected")
            request = HistoryRequest(chat=normalise_jid(chat_jid), oldest_id=oldest_id,
                                     oldest_ts_ms=oldest_ts_ms, count=count)
            self.history_log.append(request)
            if not self.history_answers:
                return  # the phone is offline: WhatsApp accepted the request, nobody answers
        if self.history_delay_s > 0:
            timer = threading.Timer(self.history_delay_s, self._answer, args=(request,))
            timer.daemon = True
            timer.start()
        else:
            self._answer(request)

    def _answer(self, request: HistoryRequest) -> None:
        answer = self.on_demand_answer(request.chat, request.oldest_ts_ms, request.count, request.oldest_id)
        with self._lock:
            request.answered = True
            request.messages = sum(len(c.messages) for c in P.history_of(answer).conversations)
            if self._online and self._session is not None:
                self._session.answers.append(answer)
                self._put(("answer", self._session))
            else:
                self._emit_locked(answer)

    # ----------------------------------------------------------------------------------------
    # Live traffic (callable from any thread; delivery happens on the phone's thread)
    # ----------------------------------------------------------------------------------------

    def emit_content(self, ref: int | str | SimChat, content: Any, *, from_me: bool = False,
                     sender: SimPerson | None = None, edit_attr: str = "", keep: bool = True) -> str:
        """A realtime message with any waE2E content (see ``protos``); returns its id. ``keep``:
        the phone keeps it as a message (False for edits, revokes and reactions)."""
        chat = self.chat(ref)
        if chat.is_group and not from_me and sender is None:
            sender = chat.participants[0]
        with self._lock:
            n, ts_ms = self._tick()
            message_id = self._live_id(n)
            self._emit_locked(self._realtime(chat, content, message_id=message_id, ts_ms=ts_ms,
                                             from_me=from_me, sender=sender, edit_attr=edit_attr,
                                             keep=keep))
        return message_id

    def emit_inbound(self, ref: int | str | SimChat | None = None, text: str | None = None, *,
                     quoted_id: str = "", sender: SimPerson | None = None) -> str:
        """A text from the other party (a participant in groups); chat and text default to
        deterministic choices."""
        with self._lock:
            chat = self.chat(self._rng.randrange(len(self.chats)) if ref is None else ref)
            words = f"{self._rng.choice(WORDS)} {self._rng.choice(WORDS)}"
        if chat.is_group and sender is None:
            sender = chat.participants[_digest(self.seed, chat.index, words)[0] % len(chat.participants)]
        content = P.extended_text(text or words, quoted_id=quoted_id) if quoted_id else P.text(text or words)
        return self.emit_content(chat, content, sender=sender)

    def emit_outbound(self, ref: int | str | SimChat, text: str = "sent from the phone") -> str:
        """A message the account's owner sent from the phone (``IsFromMe``)."""
        return self.emit_content(ref, P.text(text), from_me=True)

    def emit_receipt(self, ref: int | str | SimChat, message_ids: Iterable[str],
                     kind: ReceiptName | str = "read", *, from_me: bool = False) -> None:
        """A receipt from the other party (``from_me``: from another of our devices, *_SELF)."""
        name = kind.upper()
        if from_me and name in ("READ", "PLAYED"):
            name += "_SELF"
        chat = self.chat(ref)
        with self._lock:
            _, ts_ms = self._tick()
            self._emit_locked(self._receipt(chat, list(message_ids), name, ts_ms, from_me))

    def _key(self, chat: SimChat, target_id: str, target_from_me: bool) -> Any:
        participant = ""
        if chat.is_group:
            participant = self.own.lid if target_from_me else chat.participants[0].lid
        return P.key(chat.jid, target_id, from_me=target_from_me, participant=participant)

    def emit_edit(self, ref: int | str | SimChat, target_id: str, new_text: str, *,
                  from_me: bool = True) -> str:
        chat = self.chat(ref)
        content = P.edit(self._key(chat, target_id, from_me), P.text(new_text))
        return self.emit_content(chat, content, from_me=from_me, edit_attr="1", keep=False)

    def emit_revoke(self, ref: int | str | SimChat, target_id: str, *, from_me: bool = True) -> str:
        chat = self.chat(ref)
        return self.emit_content(chat, P.revoke(self._key(chat, target_id, from_me)),
                                 from_me=from_me, edit_attr="7", keep=False)

    def emit_reaction(self, ref: int | str | SimChat, target_id: str, emoji: str, *,
                      from_me: bool = False, target_from_me: bool = True) -> str:
        chat = self.chat(ref)
        content = P.reaction(self._key(chat, target_id, target_from_me), emoji)
        return self.emit_content(chat, content, from_me=from_me, keep=False)

    def emit_raw(self, raw: RawEvent) -> None:
        with self._lock:
            self._emit_locked(raw)

    def fail_sends(self, *reasons: str) -> None:
        """The next ``len(reasons)`` sends raise TransportError with these messages."""
        with self._lock:
            self._send_failures.extend(reasons)

    def disconnect(self) -> None:
        """The connection drops: a Disconnected event; live events are held until ``reconnect``."""
        with self._lock:
            if self._online:
                self._online = False
                self._put(("control", P.raw(P.disconnected())))

    def reconnect(self) -> None:
        """Connected, then what was held while offline, then OfflineSyncCompleted."""
        with self._lock:
            if self._thread is None:
                raise TransportError("simulated phone not started")
            if not self._online:
                self._connect_locked()

    def emit_logged_out(self, reason: str = "LOGGED_OUT") -> None:
        with self._lock:
            self._online = False
            self._put(("control", P.raw(P.logged_out(reason))))

    def emit_stream_replaced(self) -> None:
        with self._lock:
            self._online = False
            self._put(("control", P.raw(P.stream_replaced())))

    def live_mix(self, *, outbound_ratio: float = 0.15, receipt_ratio: float = 0.1,
                 edit_ratio: float = 0.0, reaction_ratio: float = 0.0, zipf_s: float = 0.0) -> LiveMix:
        """The shape of a live traffic stream, for ``emit_live`` and ``run_live``.

        Chats are picked uniformly, or with ``zipf_s > 0`` by Zipf's law (the k-th chat with
        weight 1/k**s: a few busy groups carry most of the traffic, as on real accounts)."""
        weights = list(itertools.accumulate(1 / (k + 1) ** zipf_s for k in range(len(self.chats))))
        return LiveMix(outbound_ratio, receipt_ratio, edit_ratio, reaction_ratio, weights)

    def run_live(self, rate_per_s: float, duration_s: float, *, outbound_ratio: float = 0.15,
                 receipt_ratio: float = 0.1, zipf_s: float = 0.0) -> int:
        """Queue a paced stream of live traffic (inbound texts, phone-sent texts, receipts for
        them); returns how many events it will emit. Pacing waits on the stop event, and the
        stream is held (paused) while disconnected."""
        total = int(rate_per_s * duration_s)
        mix = self.live_mix(outbound_ratio=outbound_ratio, receipt_ratio=receipt_ratio, zipf_s=zipf_s)
        self._put_stream(self._live_stream(total, rate_per_s, mix))
        return total

    def emit_live(self, mix: LiveMix) -> None:
        """One event of live traffic now (held while disconnected): the service's traffic
        streams, which go on whether a device is connected or not, as a real phone's do."""
        with self._lock:
            self._emit_locked(self._live_event(mix))

    def _live_stream(self, total: int, rate: float, mix: LiveMix) -> Iterator[RawEvent]:
        started = time.monotonic()
        for step in range(total):
            delay = started + step / rate - time.monotonic()
            session = self._session
            if delay > 0 and session is not None:
                session.stopping.wait(delay)  # pacing; a stop cuts it short and holds the rest
            with self._lock:
                event = self._live_event(mix)
            yield event

    def _live_event(self, mix: LiveMix) -> RawEvent:
        """The next live event (callers hold the lock). One roll decides: a receipt, an edit or a
        reaction for a recent phone-sent message, else a text (from the phone or to it)."""
        chat = self._rng.choices(self.chats, cum_weights=mix.cum_weights)[0]
        roll = self._rng.random()
        n, ts_ms = self._tick()
        recent = mix.recent
        edit_top = mix.receipt_ratio + mix.edit_ratio
        reaction_top = edit_top + mix.reaction_ratio
        if roll < mix.receipt_ratio and recent:
            target_chat, target = recent.popleft()
            return self._receipt(target_chat, [target], "READ", ts_ms)
        if mix.receipt_ratio <= roll < reaction_top and recent:
            target_chat, target = recent[-1]
            key = self._key(target_chat, target, True)
            if roll < edit_top:
                return self._realtime(target_chat, P.edit(key, P.text(f"edited live {n}")),
                                      message_id=self._live_id(n), ts_ms=ts_ms, from_me=True,
                                      edit_attr="1", keep=False)
            sender = target_chat.participants[0] if target_chat.is_group else None
            return self._realtime(target_chat, P.reaction(key, "\N{THUMBS UP SIGN}"),
                                  message_id=self._live_id(n), ts_ms=ts_ms, from_me=False,
                                  sender=sender, keep=False)
        from_me = roll < reaction_top + mix.outbound_ratio
        message_id = self._live_id(n)
        sender = (chat.participants[self._rng.randrange(len(chat.participants))]
                  if chat.is_group and not from_me else None)
        text = f"{self._rng.choice(WORDS)} {self._rng.choice(WORDS)} live {n}"
        event = self._realtime(chat, P.text(text), message_id=message_id, ts_ms=ts_ms,
                               from_me=from_me, sender=sender)
        if from_me:
            recent.append((chat, message_id))
        return event

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once everything queued so far was delivered (or held while offline)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    @property
    def supports_history_requests(self) -> bool:
        return self.history_requests

    @property
    def online(self) -> bool:
        return self._online

    @property
    def held(self) -> int:
        """Live events waiting for a connection."""
        return len(self._held_events)

    # ----------------------------------------------------------------------------------------
    # Queue and delivery thread
    # ----------------------------------------------------------------------------------------

    def _put(self, item: _Item) -> None:
        """Callers hold the lock and are online (so a session exists)."""
        if self._session is None:
            raise TransportError("simulated phone not started")
        self._pending += 1
        self._session.queue.put(item)

    def _put_stream(self, stream: Iterator[RawEvent]) -> None:
        with self._lock:
            if self._online:
                self._put(("stream", stream))
            else:
                self._held_streams.append(stream)

    def _emit_locked(self, raw: RawEvent) -> None:
        if self._online:
            self._put(("event", raw))
            return
        self._held_events.append(raw)
        if self.max_held is not None and len(self._held_events) > self.max_held:
            self._held_events.popleft()  # beyond the cap the oldest go, as WhatsApp's server does
            self.dropped += 1

    def drop_held(self) -> int:
        """Drop every event held for the device (they stay on the phone); returns how many."""
        with self._lock:
            count = len(self._held_events)
            self._held_events.clear()
            self.dropped += count
        return count

    def _connect_locked(self) -> None:
        held = list(self._held_events)
        streams = list(self._held_streams)
        self._held_events.clear()
        self._held_streams.clear()
        messages = sum(1 for raw in held if raw.name == "Message")
        self._online = True
        self._put(("control", P.raw(P.connected())))
        self._put(("control", P.raw(P.offline_sync_preview(messages, len(held) - messages))))
        for raw in held:
            self._put(("event", raw))
        self._put(("control", P.raw(P.offline_sync_completed(messages))))
        for stream in streams:
            self._put(("stream", stream))

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _hold(self, item: _Item) -> None:
        """Keep an undelivered item for the next connection (lifecycle events are dropped)."""
        kind, payload = item
        with self._lock:
            if kind == "event":
                self._held_events.append(payload)
            elif kind == "stream":
                self._held_streams.append(payload)
            elif kind == "answer":
                self._held_events.extend(payload.answers)
                payload.answers.clear()

    def _deliver_answers(self, sink: RawEventSink, session: _Session) -> None:
        """Deliver the on-demand answers waiting in the session's lane; one the sink refused
        goes back to the front of the lane (its ``answer`` item, still unfinished, holds it)."""
        while not session.stopping.is_set():
            with self._lock:
                if not session.answers:
                    return
                answer = session.answers.popleft()
            try:
                sink.deliver(answer)
            except Exception:
                with self._lock:
                    session.answers.appendleft(answer)
                raise

    def _run(self, sink: RawEventSink, session: _Session) -> None:
        while True:
            item = session.queue.get()
            if item is None:
                return
            if session.stopping.is_set():
                self._hold(item)
                self._done()
                continue
            try:
                if item[0] == "stream":
                    self._run_stream(sink, session, item[1])
                else:
                    try:
                        self._deliver_answers(sink, session)
                        if item[0] != "answer":
                            sink.deliver(item[1])
                    except Exception:
                        self._hold(item)
                        raise
            except SinkGone as exc:
                log.info("[simphone] %s: the device went away; holding for the next start: %s",
                         self.account_id, exc)
                with self._lock:
                    self._online = False
                self._done()
                self._drain(session)
                return
            except Exception as exc:
                log.error("[simphone] %s: the sink refused an event; delivery stopped until the "
                          "next start: %s", self.account_id, exc)
                self.error = exc
                with self._lock:
                    self._online = False
                self._done()
                self._drain(session)
                return
            self._done()

    def _run_stream(self, sink: RawEventSink, session: _Session, stream: Iterator[RawEvent]) -> None:
        for raw in stream:
            if session.stopping.is_set() or not self._online:
                self._hold(("stream", itertools.chain([raw], stream)))
                return
            try:
                self._deliver_answers(sink, session)
                sink.deliver(raw)
            except Exception:
                self._hold(("stream", itertools.chain([raw], stream)))
                raise

    def _drain(self, session: _Session) -> None:
        """Hold whatever a finished session left queued."""
        while True:
            try:
                item = session.queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._hold(item)
                self._done()
