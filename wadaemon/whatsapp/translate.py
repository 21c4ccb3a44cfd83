"""Raw neonize events -> domain events: pure functions, the only reader of neonize's protobufs.

``translate`` is called by the dispatcher on every journal entry, including entries replayed
after a crash or from a capture file, so it is deterministic, keeps no state, and never raises:
bytes it cannot make sense of become a ``RejectedEvent`` (logged and counted), never an
exception that would wedge the journal.

Choices made here (and why):

* JIDs leave normalised (``user@server``: device and agent suffixes stripped) but not canonical;
  the other form of a chat's JID travels in ``ChatAddress.alt_jid`` so the identity resolver can
  learn the LID <-> phone-number pair from the very event that carried it.
* Status broadcasts, broadcast lists and newsletters are not threads (docs/data-model.md, identity): their messages,
  receipts and mutations are dropped silently (debug log), not rejected — they are valid input.
* Known neonize events the daemon has no use for (presence, calls, ...) translate to ``[]``; an
  *unknown* event name is a ``RejectedEvent`` because it means the transport and the translator
  disagree. Of a group's changes only its subject matters (it is the thread's name): a
  ``GroupInfoEvent`` with a new name, or ``JoinedGroup`` (this account entered a group), becomes
  a ``GroupChangeEvent``; participant, topic or setting changes translate to ``[]``.
* A message's ``sender_name`` is the sender's push name, or the verified business name when the
  sender set no push name: either is a name the person or business chose to show.
* Receipts: DELIVERED/READ/PLAYED and READ_SELF/PLAYED_SELF (our other device read or played an
  inbound message) map to delivered/read/played. neonize 0.5.2 maps whatsmeow's ``played-self``
  to SERVER_ERROR; a genuine server-error receipt comes from the server about someone else's
  device, whereas played-self is sent by one of our own devices — so SERVER_ERROR *with*
  ``IsFromMe`` is read as played, any other SERVER_ERROR is ignored. RETRY, SENDER, INACTIVE,
  PEER_MSG and HISTORY_SYNC receipts say nothing about message status: ignored.
* Realtime messages that are pure protocol traffic (key distribution, app-state keys, pins,
  encrypted poll votes, ...) carry no conversation content: ``[]``. Content the translator does
  not recognise is kept as ``message_type="other"`` with an empty body — losing nothing.
* History sync: chunks are emitted whole (``HistoryChunkEvent``), even when they carry no
  conversations (PUSH_NAME, NON_BLOCKING_DATA), so progress stays visible. Stub messages
  (``messageStubType`` without content), reactions and protocol messages inside history are
  skipped: a history conversation carries messages only. ON_DEMAND answers are ``backfill``;
  every other sync type is ``history_sync``.
* History messages sent by us in direct chats name no sender (the WebMessageInfo does not carry
  our own JID): ``sender.jid`` is "" there.
* ``ReactionEvent.sender_jid`` is the phone-number form when the event carried it (the reactor
  map is keyed by canonical sender, and nothing downstream resolves that field).
* Ids and JIDs are validated here, at the edge, because they become document ids: one id
  longer than Firestore allows (1,500 bytes) or with a ``/`` in it is an error no retry fixes,
  and before this check such a message wedged its account's journal. WhatsApp's own values are
  short and plain (ids are ~20-32 hex/alphanumeric characters; users are digits, groups
  digits and dashes), so ``MAX_ID_LEN`` leaves a wide margin and the character sets are the ones
  WhatsApp uses. A message with a bad id or chat is rejected with the reason; a bad *alternate*
  JID is only ignored (the message stands on its primary JID); inside a history chunk the bad
  conversations and messages are left out and one rejection per conversation says so, while the
  rest of the chunk lands.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from neonize.proto import Neonize_pb2 as N
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as E
from neonize.proto.waHistorySync import WAWebProtobufsHistorySync_pb2 as H

from wadaemon.domain import (
    ChatAddress,
    ConnectionEvent,
    EditEvent,
    GroupChangeEvent,
    GroupInfo,
    HistoryChunkEvent,
    HistoryConversation,
    LidMapping,
    Media,
    MessageEvent,
    MessageType,
    OfflineSyncEvent,
    PairingEvent,
    ReactionEvent,
    ReceiptEvent,
    ReceiptKind,
    RejectedEvent,
    RevokeEvent,
    SyncSource,
    WhatsAppEvent,
)
from wadaemon.identity import is_lid, is_pn, normalise_jid
from wadaemon.whatsapp.transport import RawEvent

log = logging.getLogger("wadaemon.translate")

#: Valid neonize events that carry nothing the daemon stores.
IGNORED_EVENTS = frozenset({
    "KeepAliveTimeout", "KeepAliveRestored", "ChatPresence", "Presence", "Picture",
    "IdentityChange", "privacySettingsEvent", "BlocklistEvent", "BlocklistChange",
    "NewsLetterMessageMeta", "NewsletterJoin", "NewsletterLeave",
    "NewsletterMuteChange", "NewsletterLiveUpdate", "CallOffer", "CallAccept", "CallPreAccept",
    "CallTransport", "CallOfferNotice", "CallRelayLatency", "CallTerminate", "UnknownCallEvent",
    "UndecryptableMessage", "RotateADVSecret", "Device",
})

#: Servers whose chats are not threads (docs/data-model.md, identity).
NON_THREAD_SERVERS = frozenset({"broadcast", "newsletter"})

#: FutureProofMessage wrappers, unwrapped in this order (neonize unwraps realtime ones already;
#: history WebMessageInfo keeps them).
WRAPPERS = (
    "ephemeralMessage", "viewOnceMessage", "viewOnceMessageV2", "viewOnceMessageV2Extension",
    "documentWithCaptionMessage", "editedMessage", "lottieStickerMessage", "groupMentionedMessage",
    "botInvokeMessage", "pollCreationMessageV4", "spoilerMessage", "associatedChildMessage",
)

#: Content fields that are protocol traffic, not a conversation message.
NON_CONTENT = frozenset({
    "senderKeyDistributionMessage", "fastRatchetKeySenderKeyDistributionMessage",
    "messageContextInfo", "protocolMessage", "keepInChatMessage", "pinInChatMessage",
    "pollUpdateMessage", "encReactionMessage", "encEventResponseMessage", "stickerSyncRmrMessage",
    "encCommentMessage", "placeholderMessage", "secretEncryptedMessage",
})

MEDIA_FIELDS: dict[str, MessageType] = {
    "imageMessage": "image",
    "videoMessage": "video",
    "ptvMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "stickerMessage": "sticker",
}

POLL_FIELDS = ("pollCreationMessage", "pollCreationMessageV2", "pollCreationMessageV3",
               "pollCreationMessageV5", "pollCreationMessageV6")

RECEIPT_KINDS: dict[int, ReceiptKind] = {
    N.Receipt.DELIVERED: "delivered",
    N.Receipt.READ: "read",
    N.Receipt.READ_SELF: "read",
    N.Receipt.PLAYED: "played",
    N.Receipt.PLAYED_SELF: "played",
}

HISTORY_SOURCES: dict[int, SyncSource] = {H.HistorySync.ON_DEMAND: "backfill"}


class Content(NamedTuple):
    """What a waE2E.Message says, reduced to the fields a stored message keeps."""

    message_type: MessageType
    body: str = ""
    media: Media | None = None
    quoted_id: str = ""


Handler = Callable[[str, Any], list[WhatsAppEvent]]


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def translate(account_id: str, raw: RawEvent) -> list[WhatsAppEvent]:
    """Domain events of one raw neonize event; never raises (see module docstring)."""
    try:
        if raw.name in IGNORED_EVENTS:
            return []
        handler = _HANDLERS.get(raw.name)
        if handler is None:
            return [RejectedEvent(account_id, raw.name, "unknown event name")]
        cls, fn = handler
        event = cls()
        event.ParseFromString(raw.data)
        return fn(account_id, event)
    except Exception as exc:  # any parse error or malformed field: reject, never wedge
        return [RejectedEvent(account_id, raw.name, f"{type(exc).__name__}: {exc}"[:500])]


def translate_many(account_id: str, raws: Iterable[RawEvent]) -> Iterator[WhatsAppEvent]:
    for raw in raws:
        yield from translate(account_id, raw)


# --------------------------------------------------------------------------------------------
# JIDs and addresses
# --------------------------------------------------------------------------------------------


#: Longest message id accepted (WhatsApp's are ~20-32 characters; Firestore allows 1,500 bytes).
MAX_ID_LEN = 128

_ID_RE = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_ID_LEN}}}")
_DIGITS_RE = re.compile(r"[0-9]{1,32}")
#: User part per server: digits for people and bots, digits and dashes for (old-style) groups,
#: a plain word for ``status@broadcast`` and broadcast lists.
_USER_RES: dict[str, re.Pattern[str]] = {
    "s.whatsapp.net": _DIGITS_RE,
    "lid": _DIGITS_RE,
    "bot": _DIGITS_RE,
    "newsletter": _DIGITS_RE,
    "g.us": re.compile(r"[0-9][0-9-]{0,63}"),
    "broadcast": re.compile(r"[A-Za-z0-9]{1,32}"),
}


def id_problem(message_id: str) -> str:
    """Why ``message_id`` cannot be a message id ("" when it can)."""
    if _ID_RE.fullmatch(message_id):
        return ""
    if not message_id:
        return "empty message id"
    if len(message_id) > MAX_ID_LEN:
        return f"message id of {len(message_id)} characters (at most {MAX_ID_LEN})"
    return "message id with characters WhatsApp does not use"


def jid_problem(jid: str) -> str:
    """Why a normalised ``user@server`` is not a WhatsApp JID ("" when it is)."""
    user, at, server = jid.partition("@")
    if not at:
        return "JID without @"
    pattern = _USER_RES.get(server)
    if pattern is None:
        return f"JID on unknown server {server[:40]!r}"
    if not pattern.fullmatch(user):
        return f"malformed JID user part on {server}"
    return ""


def jid_str(pb: Any) -> str:
    """``neonize.JID`` -> ``user@server`` (device and agent dropped); "" for an empty JID."""
    if pb.IsEmpty or not pb.User:
        return ""
    return normalise_jid(f"{pb.User}@{pb.Server}")


def _valid_or_empty(jid: str) -> str:
    return jid if jid and not jid_problem(jid) else ""


def _server(jid: str) -> str:
    return jid.rpartition("@")[2]


def is_thread_jid(jid: str) -> bool:
    return bool(jid) and _server(jid) not in NON_THREAD_SERVERS


def other_form(jid: str, candidate: str) -> str:
    """``candidate`` when it is the other identity form of ``jid`` (LID <-> phone number)."""
    if jid_problem(candidate):
        return ""
    if (is_lid(jid) and is_pn(candidate)) or (is_pn(jid) and is_lid(candidate)):
        return candidate
    return ""


def _addresses(source: Any) -> tuple[ChatAddress, ChatAddress, bool]:
    """(chat, sender, is_group) of a MessageSource. A direct chat's other form is the sender's
    alternate JID when the other party wrote, the recipient's when we did."""
    chat = jid_str(source.Chat)
    sender = jid_str(source.Sender)
    sender_alt = jid_str(source.SenderAlt)
    is_group = source.IsGroup or _server(chat) == "g.us"
    if is_group:
        chat_alt = ""
    elif source.IsFromMe:
        chat_alt = other_form(chat, jid_str(source.RecipientAlt))
    else:
        chat_alt = other_form(chat, sender_alt)
    return (ChatAddress(chat, chat_alt), ChatAddress(sender, other_form(sender, sender_alt)),
            is_group)


def _drop(kind: str, chat: str) -> list[WhatsAppEvent]:
    log.debug("[translate] dropped %s in non-thread chat %s", kind, chat)
    return []


# --------------------------------------------------------------------------------------------
# Message content
# --------------------------------------------------------------------------------------------


def unwrap(message: Any) -> Any:
    """Peel FutureProofMessage wrappers (and deviceSentMessage) off a waE2E.Message."""
    for _ in range(8):
        for field in WRAPPERS:
            if message.HasField(field) and getattr(message, field).HasField("message"):
                message = getattr(message, field).message
                break
        else:
            if message.HasField("deviceSentMessage") and message.deviceSentMessage.HasField("message"):
                message = message.deviceSentMessage.message
                continue
            return message
    return message


def content_of(message: Any) -> Content | None:
    """The stored shape of a (wrapped) message; None when it is not conversation content."""
    message = unwrap(message)
    if message.HasField("conversation"):
        return Content("text", message.conversation)
    if message.HasField("extendedTextMessage"):
        ext = message.extendedTextMessage
        return Content("text", ext.text, quoted_id=_quoted(ext))
    for field, message_type in MEDIA_FIELDS.items():
        if message.HasField(field):
            part = getattr(message, field)
            caption = getattr(part, "caption", "")
            filename = getattr(part, "fileName", "")
            media = Media(type=message_type, mimetype=part.mimetype, filename=filename, url=part.URL)
            return Content(message_type, caption, media, _quoted(part))
    if message.HasField("locationMessage"):
        loc = message.locationMessage
        label = ", ".join(p for p in (loc.name, loc.address) if p)
        return Content("location", label or f"{loc.degreesLatitude},{loc.degreesLongitude}",
                       quoted_id=_quoted(loc))
    if message.HasField("liveLocationMessage"):
        live = message.liveLocationMessage
        return Content("location", live.caption or f"{live.degreesLatitude},{live.degreesLongitude}",
                       quoted_id=_quoted(live))
    if message.HasField("contactMessage"):
        return Content("contact", message.contactMessage.displayName,
                       quoted_id=_quoted(message.contactMessage))
    if message.HasField("contactsArrayMessage"):
        return Content("contact", message.contactsArrayMessage.displayName,
                       quoted_id=_quoted(message.contactsArrayMessage))
    for field in POLL_FIELDS:
        if message.HasField(field):
            part = getattr(message, field)
            return Content("poll", part.name, quoted_id=_quoted(part))
    if message.HasField("reactionMessage"):
        return Content("reaction", message.reactionMessage.text)
    present = [field.name for field, _ in message.ListFields()]
    if not present or all(name in NON_CONTENT for name in present):
        return None
    return Content("other")


def _quoted(part: Any) -> str:
    try:
        return str(part.contextInfo.stanzaID) if part.HasField("contextInfo") else ""
    except ValueError:  # this content type has no contextInfo
        return ""


def text_of(message: Any) -> str:
    content = content_of(message)
    return content.body if content is not None else ""


# --------------------------------------------------------------------------------------------
# Realtime messages, edits, revokes, reactions
# --------------------------------------------------------------------------------------------


def _message(account_id: str, event: Any) -> list[WhatsAppEvent]:
    info = event.Info
    chat, sender, is_group = _addresses(info.MessageSource)
    if not chat.jid or not info.ID:
        return [RejectedEvent(account_id, "Message", "message without chat or id")]
    problem = jid_problem(chat.jid) or id_problem(info.ID)
    if problem:
        return [RejectedEvent(account_id, "Message", problem)]
    if not is_thread_jid(chat.jid):
        return _drop("message", chat.jid)
    if sender.jid and jid_problem(sender.jid):
        return [RejectedEvent(account_id, "Message", f"sender: {jid_problem(sender.jid)}")]
    message = unwrap(event.Message)
    from_me = info.MessageSource.IsFromMe
    ts_ms = int(info.Timestamp)
    if message.HasField("protocolMessage"):
        proto = message.protocolMessage
        if proto.type in (E.ProtocolMessage.MESSAGE_EDIT, E.ProtocolMessage.REVOKE) and id_problem(proto.key.ID):
            return [RejectedEvent(account_id, "Message", f"target: {id_problem(proto.key.ID)}")]
        if proto.type == E.ProtocolMessage.MESSAGE_EDIT:
            return [EditEvent(account_id, chat, proto.key.ID, text_of(proto.editedMessage), ts_ms)]
        if proto.type == E.ProtocolMessage.REVOKE:
            return [RevokeEvent(account_id, chat, proto.key.ID, ts_ms)]
    if info.Edit == "1":
        return [RejectedEvent(account_id, "Message", f"edit {info.ID} without an edit protocolMessage")]
    if message.HasField("reactionMessage"):
        react = message.reactionMessage
        if id_problem(react.key.ID):
            return [RejectedEvent(account_id, "Message", f"reaction target: {id_problem(react.key.ID)}")]
        reactor = sender.alt_jid if is_pn(sender.alt_jid) else sender.jid
        return [ReactionEvent(account_id, chat, react.key.ID, reactor, react.text,
                              int(react.senderTimestampMS) or ts_ms)]
    content = content_of(message)
    if content is None:
        log.debug("[translate] message %s carries no conversation content", info.ID)
        return []
    return [MessageEvent(
        account_id=account_id, message_id=info.ID, chat=chat, sender=sender,
        sender_name=info.Pushname or _verified_name(info), from_me=from_me, is_group=is_group, ts_ms=ts_ms,
        message_type=content.message_type, body=content.body, source="realtime",
        media=content.media, quoted_message_id=content.quoted_id,
    )]


def _verified_name(info: Any) -> str:
    return str(info.VerifiedName.Details.verifiedName) if info.HasField("VerifiedName") else ""


def _receipt(account_id: str, event: Any) -> list[WhatsAppEvent]:
    source = event.MessageSource
    kind = RECEIPT_KINDS.get(event.Type)
    if kind is None and event.Type == N.Receipt.SERVER_ERROR and source.IsFromMe:
        kind = "played"  # neonize 0.5.2's mapping of played-self (module docstring)
    if kind is None or not event.MessageIDs:
        return []
    chat, _, _ = _addresses(source)
    if not chat.jid:
        return [RejectedEvent(account_id, "Receipt", "receipt without chat")]
    if jid_problem(chat.jid):
        return [RejectedEvent(account_id, "Receipt", jid_problem(chat.jid))]
    if not is_thread_jid(chat.jid):
        return _drop("receipt", chat.jid)
    ids = tuple(mid for mid in event.MessageIDs if not id_problem(mid))
    if len(ids) < len(event.MessageIDs):
        rejected: list[WhatsAppEvent] = [RejectedEvent(
            account_id, "Receipt", f"{len(event.MessageIDs) - len(ids)} unusable message ids")]
        return [ReceiptEvent(account_id, chat, ids, kind, int(event.Timestamp) * 1000), *rejected] if ids else rejected
    return [ReceiptEvent(account_id, chat, ids, kind, int(event.Timestamp) * 1000)]


# --------------------------------------------------------------------------------------------
# History sync
# --------------------------------------------------------------------------------------------


def _history(account_id: str, event: Any) -> list[WhatsAppEvent]:
    data = event.Data
    source = HISTORY_SOURCES.get(data.syncType, "history_sync")
    mappings: dict[str, str] = {}
    for pair in data.phoneNumberToLidMappings:
        _add_mapping(mappings, normalise_jid(pair.lidJID), normalise_jid(pair.pnJID))
    conversations = []
    rejected: list[WhatsAppEvent] = []
    for conv in data.conversations:
        converted = _conversation(account_id, conv, source, mappings, rejected)
        if converted is not None:
            conversations.append(converted)
    pushnames = tuple((normalise_jid(p.ID), p.pushname) for p in data.pushnames if p.ID and p.pushname)
    return [*rejected, HistoryChunkEvent(
        account_id=account_id,
        sync_type=H.HistorySync.HistorySyncType.Name(data.syncType),
        chunk_order=int(data.chunkOrder), progress=int(data.progress),
        conversations=tuple(conversations),
        lid_mappings=tuple(LidMapping(lid=lid, pn=pn) for lid, pn in mappings.items()),
        pushnames=pushnames,
    )]


def _add_mapping(mappings: dict[str, str], lid: str, pn: str) -> None:
    if is_lid(lid) and is_pn(pn) and not (jid_problem(lid) or jid_problem(pn)):
        mappings[lid] = pn


def _conversation(account_id: str, conv: Any, source: SyncSource, mappings: dict[str, str],
                  rejected: list[WhatsAppEvent]) -> HistoryConversation | None:
    chat_jid = normalise_jid(conv.ID)
    problem = jid_problem(chat_jid)
    if problem:
        rejected.append(RejectedEvent(account_id, "HistorySync",
                                      f"conversation left out ({len(conv.messages)} messages): {problem}"))
        return None
    if not is_thread_jid(chat_jid):
        log.debug("[translate] dropped history conversation %s (%d messages)", chat_jid, len(conv.messages))
        return None
    pn, lid = _valid_or_empty(normalise_jid(conv.pnJID)), _valid_or_empty(normalise_jid(conv.lidJID))
    _add_mapping(mappings, lid or chat_jid, pn or chat_jid)
    alt = other_form(chat_jid, pn) or other_form(chat_jid, lid) or mappings.get(chat_jid, "")
    chat = ChatAddress(chat_jid, alt)
    is_group = _server(chat_jid) == "g.us"
    messages = []
    bad = 0
    for item in conv.messages:
        if item.HasField("message"):
            info = item.message
            if info.key.ID and id_problem(info.key.ID):
                bad += 1
                continue
            converted = _history_message(account_id, info, chat, is_group, source)
            if converted is not None:
                messages.append(converted)
    if bad:
        rejected.append(RejectedEvent(account_id, "HistorySync",
                                      f"{bad} messages left out of {chat_jid}: unusable message ids"))
    no_more = conv.endOfHistoryTransferType == H.Conversation.COMPLETE_AND_NO_MORE_MESSAGE_REMAIN_ON_PRIMARY
    return HistoryConversation(chat=chat, name=conv.name or conv.displayName, is_group=is_group,
                               messages=tuple(messages),
                               end_of_history=conv.HasField("endOfHistoryTransferType") and no_more)


def _history_message(account_id: str, info: Any, chat: ChatAddress, is_group: bool,
                     source: SyncSource) -> MessageEvent | None:
    if info.messageStubType or not info.HasField("message") or not info.key.ID:
        return None  # stubs (joins, revoked placeholders, undecryptable, ...) carry no content
    content = content_of(info.message)
    if content is None or content.message_type == "reaction":
        return None
    from_me = info.key.fromMe
    if is_group:
        sender_jid = _valid_or_empty(normalise_jid(info.key.participant or info.participant))
    else:
        sender_jid = "" if from_me else chat.jid
    sender = ChatAddress(sender_jid, chat.alt_jid if sender_jid == chat.jid else "")
    return MessageEvent(
        account_id=account_id, message_id=info.key.ID, chat=chat, sender=sender,
        sender_name=info.pushName, from_me=from_me, is_group=is_group,
        ts_ms=int(info.messageTimestamp) * 1000, message_type=content.message_type,
        body=content.body, source=source, media=content.media, quoted_message_id=content.quoted_id,
    )


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------


def group_info_of(info: Any) -> GroupInfo:
    """``neonize.GroupInfo`` (``get_group_info``'s answer, ``JoinedGroup``'s payload) -> domain."""
    return GroupInfo(
        jid=jid_str(info.JID), subject=str(info.GroupName.Name),
        participants=tuple(p for p in (jid_str(part.JID) for part in info.Participants) if p),
        subject_set_ms=int(info.GroupName.NameSetAt) * 1000,
    )


def _group_info_event(account_id: str, event: Any) -> list[WhatsAppEvent]:
    if not event.HasField("Name"):
        return []
    group = jid_str(event.JID)
    if not group:
        return [RejectedEvent(account_id, "GroupInfoEvent", "group change without a group")]
    return [GroupChangeEvent(account_id, group, str(event.Name.Name), int(event.Timestamp) * 1000)]


def _joined_group(account_id: str, event: Any) -> list[WhatsAppEvent]:
    info = group_info_of(event.GroupInfo)
    if not info.jid:
        return [RejectedEvent(account_id, "JoinedGroup", "joined a group without a JID")]
    return [GroupChangeEvent(account_id, info.jid, info.subject, info.subject_set_ms)]


# --------------------------------------------------------------------------------------------
# Connection and pairing
# --------------------------------------------------------------------------------------------


def _connected(account_id: str, event: Any) -> list[WhatsAppEvent]:
    return [ConnectionEvent(account_id, "connected")]


def _disconnected(account_id: str, event: Any) -> list[WhatsAppEvent]:
    return [ConnectionEvent(account_id, "disconnected")]


def _logged_out(account_id: str, event: Any) -> list[WhatsAppEvent]:
    reason = N.ConnectFailureReason.Name(event.Reason) if event.Reason else ""
    return [ConnectionEvent(account_id, "logged_out", reason=reason.lower())]


def _stream_replaced(account_id: str, event: Any) -> list[WhatsAppEvent]:
    return [ConnectionEvent(account_id, "disconnected", reason="stream_replaced")]


def _connect_failure(account_id: str, event: Any) -> list[WhatsAppEvent]:
    reason = N.ConnectFailureReason.Name(event.Reason) if event.Reason else "unknown"
    return [ConnectionEvent(account_id, "disconnected", reason=f"connect_failure:{reason.lower()}")]


def _temporary_ban(account_id: str, event: Any) -> list[WhatsAppEvent]:
    return [ConnectionEvent(account_id, "disconnected", reason="temporary_ban")]


def _client_outdated(account_id: str, event: Any) -> list[WhatsAppEvent]:
    return [ConnectionEvent(account_id, "disconnected", reason="client_outdated")]


def _stream_error(account_id: str, event: Any) -> list[WhatsAppEvent]:
    return [ConnectionEvent(account_id, "disconnected", reason=f"stream_error:{event.Code}")]


def _offline_preview(account_id: str, event: Any) -> list[WhatsAppEvent]:
    return [OfflineSyncEvent(account_id, completed=False, messages=int(event.Message))]


def _offline_completed(account_id: str, event: Any) -> list[WhatsAppEvent]:
    return [OfflineSyncEvent(account_id, completed=True, messages=int(event.Count))]


def _pair_status(account_id: str, event: Any) -> list[WhatsAppEvent]:
    if event.Status == N.PairStatus.SUCCESS:
        return [PairingEvent(account_id, paired_jid=jid_str(event.ID))]
    return [PairingEvent(account_id, error=event.Error or "pairing failed")]


def _qr(account_id: str, event: Any) -> list[WhatsAppEvent]:
    return [PairingEvent(account_id, qr=event.Codes[0])] if event.Codes else []


_HANDLERS: dict[str, tuple[Any, Handler]] = {
    "Message": (N.Message, _message),
    "Receipt": (N.Receipt, _receipt),
    "HistorySync": (N.HistorySync, _history),
    "GroupInfoEvent": (N.GroupInfoEvent, _group_info_event),
    "JoinedGroup": (N.JoinedGroup, _joined_group),
    "Connected": (N.Connected, _connected),
    "Disconnected": (N.Disconnected, _disconnected),
    "LoggedOut": (N.LoggedOut, _logged_out),
    "StreamReplaced": (N.StreamReplaced, _stream_replaced),
    "ConnectFailure": (N.ConnectFailure, _connect_failure),
    "TemporaryBan": (N.TemporaryBan, _temporary_ban),
    "ClientOutdated": (N.ClientOutdated, _client_outdated),
    "StreamError": (N.StreamError, _stream_error),
    "OfflineSyncPreview": (N.OfflineSyncPreview, _offline_preview),
    "OfflineSyncCompleted": (N.OfflineSyncCompleted, _offline_completed),
    "PairStatus": (N.PairStatus, _pair_status),
    "QR": (N.QR, _qr),
}
