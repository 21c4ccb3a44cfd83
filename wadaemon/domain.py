"""Domain events and documents: the one definition of everything wadaemon moves or stores.

Two families live here, both msgspec Structs:

* **Events** are what the WhatsApp adapter emits after translating neonize's protobufs at the
  edge. Actors speak only these; no neonize type crosses into the rest of the daemon. JIDs in
  events are already *normalised* (device suffix stripped) but not yet *canonical*: resolving a
  LID to a phone-number JID is the identity resolver's job (``wadaemon.identity``), because the
  mapping may be learned only later.
* **Documents** mirror docs/data-model.md field for field (``rename="camel"`` gives the exact Firestore
  field names the Flutter inbox reads). Store adapters persist them; nothing else knows whether
  they end up in Firestore or SQLite.

Times inside the daemon are integer epoch milliseconds (``*_ms``); documents carry both the
timestamp and the ms field because the schema does (queries order on the ms field).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import msgspec

MessageType = Literal[
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contact",
    "reaction",
    "poll",
    "other",
]
Direction = Literal["inbound", "outbound"]
MessageStatus = Literal["queued", "sent", "delivered", "read", "played", "failed"]
ReceiptKind = Literal["delivered", "read", "played"]
SyncSource = Literal[
    "history_sync",
    "history_sync_immediate",
    "realtime",
    "backfill",
    "recent_sync",
    "outbound",
]
ConnectionState = Literal["pairing", "connecting", "connected", "disconnected", "logged_out"]

#: Outbound status order (docs/data-model.md). ``failed`` sits outside the order: it is only ever set on
#: a message we queued ourselves and whose send failed, and a later receipt still wins.
STATUS_RANK: dict[str, int] = {
    "failed": 0,
    "queued": 1,
    "sent": 2,
    "delivered": 3,
    "read": 4,
    "played": 5,
}


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds to an aware UTC datetime (Firestore stores timestamps at ms precision)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


# --------------------------------------------------------------------------------------------
# Events: WhatsApp adapter -> actors
# --------------------------------------------------------------------------------------------


class ChatAddress(msgspec.Struct, frozen=True):
    """A chat as the event addressed it, plus the other form of the same JID when the event
    carried it (``SenderAlt`` / ``RecipientAlt`` / history ``pnJID``)."""

    jid: str
    alt_jid: str = ""


class Media(msgspec.Struct, frozen=True):
    type: str
    mimetype: str = ""
    filename: str = ""
    url: str = ""


class LidMapping(msgspec.Struct, frozen=True):
    lid: str
    pn: str


class MessageEvent(msgspec.Struct, frozen=True, tag="message"):
    """A message, from realtime delivery, history sync or an on-demand backfill answer."""

    account_id: str
    message_id: str
    chat: ChatAddress
    sender: ChatAddress
    sender_name: str
    from_me: bool
    is_group: bool
    ts_ms: int
    message_type: MessageType
    body: str
    source: SyncSource
    media: Media | None = None
    quoted_message_id: str = ""
    chat_name: str = ""


class EditEvent(msgspec.Struct, frozen=True, tag="edit"):
    account_id: str
    chat: ChatAddress
    target_id: str
    new_body: str
    ts_ms: int


class RevokeEvent(msgspec.Struct, frozen=True, tag="revoke"):
    account_id: str
    chat: ChatAddress
    target_id: str
    ts_ms: int


class ReactionEvent(msgspec.Struct, frozen=True, tag="reaction"):
    """``emoji == ""`` removes the sender's reaction."""

    account_id: str
    chat: ChatAddress
    target_id: str
    sender_jid: str
    emoji: str
    ts_ms: int


class ReceiptEvent(msgspec.Struct, frozen=True, tag="receipt"):
    account_id: str
    chat: ChatAddress
    message_ids: tuple[str, ...]
    kind: ReceiptKind
    ts_ms: int


class HistoryConversation(msgspec.Struct, frozen=True):
    chat: ChatAddress
    name: str
    is_group: bool
    messages: tuple[MessageEvent, ...]
    #: The phone said it holds nothing older than these (an on-demand answer's
    #: ``endOfHistoryTransferType`` COMPLETE_AND_NO_MORE_MESSAGE_REMAIN_ON_PRIMARY).
    end_of_history: bool = False


class HistoryChunkEvent(msgspec.Struct, frozen=True, tag="history"):
    """One chunk of WhatsApp's history sync; ingested on its own, so memory stays bounded."""

    account_id: str
    sync_type: str
    chunk_order: int
    progress: int
    conversations: tuple[HistoryConversation, ...]
    lid_mappings: tuple[LidMapping, ...] = ()
    pushnames: tuple[tuple[str, str], ...] = ()


class GroupInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What WhatsApp says of a group when asked (``Transport.group_info``): its subject and
    who is in it. ``participants`` are normalised JIDs as WhatsApp listed them."""

    jid: str
    subject: str
    participants: tuple[str, ...] = ()
    subject_set_ms: int = 0


class GroupChangeEvent(msgspec.Struct, frozen=True, tag="group"):
    """A group's subject became known or changed (WhatsApp's group-info notification, or our
    account joining a group): the thread's name follows it."""

    account_id: str
    jid: str
    subject: str
    ts_ms: int = 0


class ConnectionEvent(msgspec.Struct, frozen=True, tag="connection"):
    account_id: str
    state: ConnectionState
    phone_jid: str = ""
    reason: str = ""


class OfflineSyncEvent(msgspec.Struct, frozen=True, tag="offline_sync"):
    """Offline sync preview/completed: the phone has delivered what was sent while we were away."""

    account_id: str
    completed: bool
    messages: int = 0


class PairingEvent(msgspec.Struct, frozen=True, tag="pairing"):
    """A QR code to show, or the pairing outcome."""

    account_id: str
    qr: str = ""
    paired_jid: str = ""
    error: str = ""


class RejectedEvent(msgspec.Struct, frozen=True, tag="rejected"):
    """Raw input the translator could not make sense of: logged and counted, never fatal."""

    account_id: str
    event_name: str
    reason: str


Mutation = EditEvent | RevokeEvent | ReactionEvent
WhatsAppEvent = (
    MessageEvent
    | EditEvent
    | RevokeEvent
    | ReactionEvent
    | ReceiptEvent
    | HistoryChunkEvent
    | GroupChangeEvent
    | ConnectionEvent
    | OfflineSyncEvent
    | PairingEvent
    | RejectedEvent
)


# --------------------------------------------------------------------------------------------
# Documents: docs/data-model.md, exact field names through rename="camel"
# --------------------------------------------------------------------------------------------


class Doc(msgspec.Struct, rename="camel"):
    """Base of every document: camelCase field names. A field that is None is *absent*: it is
    not written (see ``wadaemon.store.encoding.document_fields``)."""


class MessageDoc(Doc):
    """``threads/{threadId}/messages/{messageId}``."""

    id: str
    wa_message_id: str
    account_id: str
    client_jid: str
    thread_id: str
    direction: Direction
    sender_jid: str
    ts_client: datetime
    ts_client_ms: int
    sender_name: str = ""
    body: str = ""
    message_type: MessageType = "text"
    media_type: str | None = None
    media_url: str | None = None
    media_mimetype: str | None = None
    media_filename: str | None = None
    status: MessageStatus = "delivered"
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    ts_server: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    synced_at: datetime | None = None
    sync_source: SyncSource = "realtime"
    edited_at: datetime | None = None
    edited_body: str | None = None
    deleted_at: datetime | None = None
    deleted: bool | None = None
    reactions: dict[str, str] | None = None
    quoted_message_id: str | None = None


class ThreadDoc(Doc):
    """``threads/{threadId}``.

    ``last_message_text`` and ``normalized_phone`` are the names the Flutter inbox prefers
    (``lastMessageText`` before ``lastMessagePreview``, ``normalizedPhone`` before
    ``phoneE164``): they are always written with the same value as their twin
    (``wadaemon.store.merge.advance_thread``), so a stale value left by another writer cannot
    win. No ``id``/``threadId`` field is written: the inbox lets either override the doc id.
    """

    account_id: str
    client_jid: str
    display_name: str = ""
    last_message_at: datetime | None = None
    last_message_at_ms: int | None = None
    last_message_preview: str | None = None
    last_message_text: str | None = None
    last_backfill_at: datetime | None = None
    is_group: bool = False
    alias_jids: list[str] = msgspec.field(default_factory=list)
    last_message_direction: Direction | None = None
    last_inbound_at: datetime | None = None
    last_inbound_at_ms: int | None = None
    phone_e164: str | None = None
    normalized_phone: str | None = None
    updated_at: datetime | None = None
    #: Backfill found the phone holds nothing older: not asked again before the retry interval.
    backfill_exhausted_at: datetime | None = None
    #: Recent-sync verified this thread against every gap that ended at or before this time.
    gap_checked_through_ms: int | None = None


class ThreadPatch(msgspec.Struct, frozen=True, kw_only=True):
    """Direct changes to an *existing* thread (``Store.patch_threads``): what backfill and
    recent-sync record on it, and what repair corrects. Unlike ``ThreadSummary`` it is not
    forward-only: repair must be able to move a summary that names a time in the future (the
    original backend stamped ``now`` on history chunks) back to the newest stored message."""

    thread_id: str
    last_backfill_ms: int | None = None
    backfill_exhausted_ms: int | None = None
    gap_checked_through_ms: int | None = None
    #: Repair: recompute lastMessageAt/AtMs/Preview/Direction from this (newest stored) message,
    #: only if the stored summary still names ``seen_last_ms`` (None: still has none) — a live
    #: message that advanced the summary since repair looked must not be undone.
    newest: MessageDoc | None = None
    seen_last_ms: int | None = None


class ThreadSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What a batch of messages says about its thread; the store applies it forward-only
    (an older ``last_message_ms`` never replaces a newer one). Coalesced per batch.

    ``create=False``: a name learned for a thread that may not exist (a group subject, a push
    name): applied to an existing thread, never creating one without a message."""

    account_id: str
    client_jid: str
    display_name: str = ""
    is_group: bool = False
    last_message_ms: int | None = None
    last_message_preview: str = ""
    last_message_direction: Direction | None = None
    last_inbound_ms: int | None = None
    phone_e164: str = ""
    backfilled_at_ms: int | None = None
    create: bool = True


class ReceiptUpdate(msgspec.Struct, frozen=True):
    """A receipt for one message, addressed by canonical thread."""

    thread_id: str
    message_id: str
    kind: ReceiptKind
    ts_ms: int


class MessageMutation(msgspec.Struct, frozen=True, kw_only=True):
    """An edit, revoke or reaction for one stored message, addressed by canonical thread."""

    thread_id: str
    message_id: str
    kind: Literal["edit", "revoke", "reaction"]
    ts_ms: int
    body: str = ""
    reactor_jid: str = ""
    emoji: str = ""


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """A lock document (``whatsapp_backfill_locks``, ``whatsapp_account_leases``) or the
    recent-sync lease fields on ``accounts/*``, seen from the holder's side. ``epoch`` is the
    fencing counter of account leases (``wadaemon.store.leases``); 0 for the other kinds."""

    kind: str
    key: str
    owner_id: str
    expires_at_ms: int
    acquired_at_ms: int
    epoch: int = 0


class InstanceDoc(Doc, kw_only=True):
    """``whatsapp_instances/{instanceId}``: one running instance's heartbeat. Every instance
    reads all of them to know who is alive (fair share, ``wadaemon.cluster.share``)."""

    instance_id: str
    heartbeat_at_ms: int
    started_at_ms: int
    version: str
    #: Accounts this instance holds right now (their leases are the truth; this is a view).
    accounts: list[str] = msgspec.field(default_factory=list)
    #: ``WADAEMON_ACCOUNTS`` of that instance: it takes only these (empty: any account).
    pinned_accounts: list[str] = msgspec.field(default_factory=list)
    #: False once the instance began stopping: it takes no new accounts.
    accepting: bool = True


def thread_id_for(account_id: str, client_jid: str) -> str:
    """docs/data-model.md: ``{accountId}__{clientJid}``. Escaping for document ids is the store's job."""
    return f"{account_id}__{client_jid}"


class HistorySyncResult(Doc):
    saved: int = 0
    skipped: int = 0
    errors: int = 0
    total: int = 0
    dry_run: bool = False


class BackfillStats(Doc):
    threads: int = 0
    messages: int = 0
    errors: int = 0
    duration_ms: int = 0


class BackfillThreadResult(Doc):
    thread_id: str
    messages: int = 0
    error: str | None = None
    #: Why no request was made (``exhausted``, ``no_anchor``, ``idle``).
    skipped: str | None = None
    requests: int = 0


class BackfillResult(Doc):
    threads: int = 0
    messages: int = 0
    errors: int = 0
    thread_results: list[BackfillThreadResult] = msgspec.field(default_factory=list)


class AutoBackfillStatus(Doc):
    """running ``{running, startedAt, trigger, holder}`` | success ``{ok, running, threads,
    messages, errors, durationMs}`` | error ``{ok, running, errorCode, errorMessage, durationMs}``."""

    running: bool
    ok: bool | None = None
    started_at: datetime | None = None
    trigger: Literal["connect", "periodic", "manual"] | None = None
    holder: str | None = None
    threads: int | None = None
    messages: int | None = None
    errors: int | None = None
    duration_ms: int | None = None
    error_code: str | None = None
    error_message: str | None = None


class RecentSyncResult(Doc):
    ok: bool
    threads: int = 0
    messages: int = 0
    errors: int = 0
    duration_ms: int = 0
    requests: int = 0
    gaps_closed: int = 0
    gaps_open: int = 0
    dry_run: bool = False
    error_code: str | None = None


class SyncGap(Doc):
    """A span during which this account's events may not have reached the store (the daemon
    down or disconnected, a failover, a quarantined journal): recent-sync's work list."""

    from_ms: int
    to_ms: int
    reason: str


class AccountDoc(Doc):
    """``accounts/{accountId}``: status fields an operator reads.

    Used both as the stored document and as a *patch*: ``update_account`` writes exactly the
    fields that are not None, each replaced whole, and leaves every other field untouched.
    """

    state: ConnectionState | None = None
    owner_instance: str | None = None
    phone_jid: str | None = None
    history_sync_capability: str | None = None
    last_history_sync_at: datetime | None = None
    history_sync_count: int | None = None
    last_history_sync_result: HistorySyncResult | None = None
    last_backfill_at: datetime | None = None
    last_backfill_result: BackfillResult | None = None
    last_backfill_status: Literal["running", "success", "error"] | None = None
    last_backfill_error: str | None = None
    last_backfill_stats: BackfillStats | None = None
    last_auto_backfill_at: datetime | None = None
    last_auto_backfill_success_at: datetime | None = None
    last_auto_backfill_attempt_at: datetime | None = None
    last_auto_backfill_status: AutoBackfillStatus | None = None
    auto_backfill_lease_until: datetime | None = None
    auto_backfill_lease_holder: str | None = None
    auto_backfill_lease_acquired_at: datetime | None = None
    last_realtime_ingest_at: datetime | None = None
    last_realtime_message_at: datetime | None = None
    last_realtime_error: str | None = None
    last_recent_sync_at: datetime | None = None
    last_recent_sync_result: RecentSyncResult | None = None
    recent_sync_lease_until: datetime | None = None
    recent_sync_lease_holder: str | None = None
    recent_sync_lease_acquired_at: datetime | None = None
    last_auto_repair_at: datetime | None = None
    #: Until when this account's events are known to have reached the journal (a heartbeat
    #: while connected; the start of the next gap after a crash or a failover).
    covered_until: datetime | None = None
    #: Open gaps, oldest first (replaced whole: one writer per account).
    sync_gaps: list[SyncGap] | None = None
    updated_at: datetime | None = None
