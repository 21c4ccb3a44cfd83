"""Builders of genuine neonize 0.5.2 protobuf events, for tests and the simulated phone.

Everything here produces the very classes neonize hands its event handlers, with every proto2
*required* field set — neonize's Go side always fills them, and ``SerializeToString()`` refuses
a message that lacks one. Building from the real classes (rather than hand-written fakes) keeps
the translator honest: a field renamed in a neonize upgrade breaks these builders loudly.

JID arguments are strings (``"40712345678:3@s.whatsapp.net"``); ``""`` is an empty JID.
Units follow neonize: ``MessageInfo.Timestamp`` is milliseconds, ``Receipt.Timestamp`` and the
history sync ``messageTimestamp`` are seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from neonize.proto import Neonize_pb2 as N
from neonize.proto.waCommon import WACommon_pb2 as C
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as E
from neonize.proto.waHistorySync import WAWebProtobufsHistorySync_pb2 as H
from neonize.proto.waWeb import WAWebProtobufsWeb_pb2 as W

from wadaemon.whatsapp.transport import RawEvent

PN_SERVER = "s.whatsapp.net"

# --------------------------------------------------------------------------------------------
# JIDs and envelopes
# --------------------------------------------------------------------------------------------


def jid(user: str, server: str = PN_SERVER, device: int = 0) -> Any:
    """A ``neonize.JID``; ``RawAgent`` and ``Integrator`` are required even when zero."""
    return N.JID(User=user, Server=server, Device=device, RawAgent=0, Integrator=0,
                 IsEmpty=not (user or server))


def parse_jid(text: str) -> Any:
    """``user[.agent][:device]@server`` -> ``neonize.JID``; ``""`` -> the empty JID."""
    if not text:
        return jid("", "")
    user, _, server = text.partition("@")
    user, _, device = user.partition(":")
    user, _, agent = user.partition(".")
    built = jid(user, server, int(device or 0))
    built.RawAgent = int(agent or 0)
    return built


def message_source(chat: str, sender: str, *, from_me: bool = False, is_group: bool | None = None,
                   sender_alt: str = "", recipient_alt: str = "") -> Any:
    chat_jid = parse_jid(chat)
    lid_addressed = chat_jid.Server == "lid" or sender.partition("@")[2] == "lid"
    return N.MessageSource(
        Chat=chat_jid, Sender=parse_jid(sender), IsFromMe=from_me,
        IsGroup=chat_jid.Server == "g.us" if is_group is None else is_group,
        AddressingMode=N.AddressingMode.LID if lid_addressed else N.AddressingMode.PN,
        SenderAlt=parse_jid(sender_alt), RecipientAlt=parse_jid(recipient_alt),
        BroadcastListOwner=parse_jid(""),
    )


def raw(event: Any) -> RawEvent:
    """The transport form of a neonize event: its class name and its bytes."""
    return RawEvent(type(event).__name__, event.SerializeToString())


# --------------------------------------------------------------------------------------------
# Message content (waE2E.Message)
# --------------------------------------------------------------------------------------------


def context(quoted_id: str = "", quoted_participant: str = "") -> Any:
    return E.ContextInfo(stanzaID=quoted_id, participant=quoted_participant,
                         quotedMessage=E.Message(conversation="")) if quoted_id else None


def text(body: str) -> Any:
    """A plain ``conversation`` text (what phones send when there is no reply or preview)."""
    return E.Message(conversation=body)


def extended_text(body: str, *, quoted_id: str = "", quoted_participant: str = "") -> Any:
    return E.Message(extendedTextMessage=E.ExtendedTextMessage(
        text=body, contextInfo=context(quoted_id, quoted_participant)))


def image(caption: str = "", mimetype: str = "image/jpeg", url: str = "") -> Any:
    return E.Message(imageMessage=E.ImageMessage(caption=caption, mimetype=mimetype, URL=url))


def video(caption: str = "", mimetype: str = "video/mp4") -> Any:
    return E.Message(videoMessage=E.VideoMessage(caption=caption, mimetype=mimetype, seconds=7))


def audio(ptt: bool = True, mimetype: str = "audio/ogg; codecs=opus") -> Any:
    return E.Message(audioMessage=E.AudioMessage(PTT=ptt, mimetype=mimetype, seconds=4))


def document(filename: str, caption: str = "", mimetype: str = "application/pdf") -> Any:
    return E.Message(documentMessage=E.DocumentMessage(
        fileName=filename, title=filename, caption=caption, mimetype=mimetype))


def sticker(mimetype: str = "image/webp") -> Any:
    return E.Message(stickerMessage=E.StickerMessage(mimetype=mimetype))


def location(lat: float, lon: float, name: str = "", address: str = "") -> Any:
    return E.Message(locationMessage=E.LocationMessage(
        degreesLatitude=lat, degreesLongitude=lon, name=name, address=address))


def contact(display_name: str, vcard: str = "") -> Any:
    return E.Message(contactMessage=E.ContactMessage(displayName=display_name, vcard=vcard))


def poll(name: str, options: Sequence[str], version: int = 1) -> Any:
    """``version`` 1, 2, 3 pick pollCreationMessage / V2 / V3 (same shape)."""
    field = {1: "pollCreationMessage", 2: "pollCreationMessageV2", 3: "pollCreationMessageV3"}[version]
    body = E.PollCreationMessage(name=name, selectableOptionsCount=1,
                                 options=[E.PollCreationMessage.Option(optionName=o) for o in options])
    return E.Message(**{field: body})


def key(chat: str, message_id: str, *, from_me: bool = False, participant: str = "") -> Any:
    return C.MessageKey(remoteJID=chat, fromMe=from_me, ID=message_id, participant=participant)


def reaction(target: Any, emoji: str, sender_ts_ms: int = 0) -> Any:
    """``target`` is a ``key(...)``; ``emoji == ""`` removes the reaction."""
    return E.Message(reactionMessage=E.ReactionMessage(key=target, text=emoji,
                                                       senderTimestampMS=sender_ts_ms))


def edit(target: Any, new_content: Any, ts_ms: int = 0) -> Any:
    """An edit as neonize delivers it: the ``editedMessage`` wrapper already removed."""
    return E.Message(protocolMessage=E.ProtocolMessage(
        key=target, type=E.ProtocolMessage.MESSAGE_EDIT, editedMessage=new_content, timestampMS=ts_ms))


def revoke(target: Any) -> Any:
    return E.Message(protocolMessage=E.ProtocolMessage(key=target, type=E.ProtocolMessage.REVOKE))


def wrap(content: Any, wrapper: str) -> Any:
    """Wrap content in a FutureProofMessage field (``ephemeralMessage``, ``viewOnceMessageV2``...)."""
    return E.Message(**{wrapper: E.FutureProofMessage(message=content)})


# --------------------------------------------------------------------------------------------
# Events (Neonize_pb2)
# --------------------------------------------------------------------------------------------


def message_event(*, chat: str, sender: str, message_id: str, content: Any, ts_ms: int,
                  pushname: str = "", from_me: bool = False, is_group: bool | None = None,
                  sender_alt: str = "", recipient_alt: str = "", edit_attr: str = "") -> Any:
    """A realtime ``MessageEv``. ``edit_attr`` is ``Info.Edit``: "" | "1" edit | "7"/"8" revoke."""
    info = N.MessageInfo(
        MessageSource=message_source(chat, sender, from_me=from_me, is_group=is_group,
                                     sender_alt=sender_alt, recipient_alt=recipient_alt),
        ID=message_id, ServerID=0, Type="media" if _is_media(content) else "text",
        Pushname=pushname, Timestamp=ts_ms, Category="", Multicast=False, MediaType="", Edit=edit_attr,
    )
    return N.Message(
        Info=info, Message=content, Raw=content, IsEphemeral=False, IsViewOnce=False,
        IsViewOnceV2=False, IsViewOnceV2Extension=False, IsDocumentWithCaption=False,
        IsLottieSticker=False, IsEdit=edit_attr == "1", UnavailableRequestID="", RetryCount=0,
    )


def receipt_event(*, chat: str, sender: str, message_ids: Iterable[str], kind: str, ts_s: int,
                  from_me: bool = False, sender_alt: str = "", recipient_alt: str = "") -> Any:
    """``kind`` is a ``Receipt.ReceiptType`` name: DELIVERED, READ, PLAYED, READ_SELF, ..."""
    return N.Receipt(
        MessageSource=message_source(chat, sender, from_me=from_me, sender_alt=sender_alt,
                                     recipient_alt=recipient_alt),
        MessageIDs=list(message_ids), Timestamp=ts_s, Type=N.Receipt.ReceiptType.Value(kind),
    )


def web_message(*, chat: str, message_id: str, content: Any | None, ts_s: int, from_me: bool = False,
                participant: str = "", push_name: str = "", stub_type: int = 0) -> Any:
    """A history ``WebMessageInfo``; content stays wrapped as the phone stored it."""
    info = W.WebMessageInfo(key=key(chat, message_id, from_me=from_me, participant=participant),
                            messageTimestamp=ts_s, pushName=push_name)
    if content is not None:
        info.message.CopyFrom(content)
    if stub_type:
        info.messageStubType = stub_type
    return info


def conversation(chat_id: str, messages: Sequence[Any], *, name: str = "", pn_jid: str = "",
                 lid_jid: str = "", end_of_history: int | None = None) -> Any:
    conv = H.Conversation(ID=chat_id, name=name, pnJID=pn_jid, lidJID=lid_jid, messages=[
        H.HistorySyncMsg(message=m, msgOrderID=n + 1) for n, m in enumerate(messages)])
    if end_of_history is not None:
        conv.endOfHistoryTransferType = end_of_history
    return conv


def history_sync_event(sync_type: str, conversations: Sequence[Any] = (), *, chunk_order: int = 0,
                       progress: int = 0, pushnames: Iterable[tuple[str, str]] = (),
                       lid_mappings: Iterable[tuple[str, str]] = ()) -> Any:
    """A ``HistorySyncEv``. ``lid_mappings`` are (lid, pn) pairs."""
    data = H.HistorySync(
        syncType=H.HistorySync.HistorySyncType.Value(sync_type), conversations=list(conversations),
        chunkOrder=chunk_order, progress=progress,
        pushnames=[H.Pushname(ID=i, pushname=p) for i, p in pushnames],
        phoneNumberToLidMappings=[H.PhoneNumberToLIDMapping(lidJID=lid, pnJID=pn) for lid, pn in lid_mappings],
    )
    return N.HistorySync(Data=data)


def group_info(*, group: str, subject: str, participants: Sequence[str] = (), name_set_s: int = 0) -> Any:
    """A ``neonize.GroupInfo``: what ``get_group_info`` answers and ``JoinedGroup`` carries."""
    empty = parse_jid("")
    return N.GroupInfo(
        OwnerJID=empty, JID=parse_jid(group), OwnerPN=empty,
        GroupName=N.GroupName(Name=subject, NameSetAt=name_set_s, NameSetBy=empty),
        GroupTopic=N.GroupTopic(Topic="", TopicID="", TopicSetAt=0, TopicSetBy=empty, TopicDeleted=False),
        GroupLocked=N.GroupLocked(isLocked=False),
        GroupAnnounce=N.GroupAnnounce(IsAnnounce=False, AnnounceVersionID=""),
        GroupEphemeral=N.GroupEphemeral(IsEphemeral=False, DisappearingTimer=0),
        GroupIncognito=N.GroupIncognito(IsIncognito=False),
        GroupParent=N.GroupParent(IsParent=False, DefaultMembershipApprovalMode=""),
        GroupLinkedParent=N.GroupLinkedParent(LinkedParentJID=empty),
        GroupIsDefaultSub=N.GroupIsDefaultSub(IsDefaultSubGroup=False),
        GroupCreated=0, ParticipantVersionID="",
        Participants=[N.GroupParticipant(JID=parse_jid(p), LID=parse_jid(p if p.endswith("@lid") else ""),
                                         PhoneNumber=empty, IsAdmin=False, IsSuperAdmin=False,
                                         DisplayName="", Error=0) for p in participants],
    )


def group_info_event(*, group: str, subject: str | None, ts_s: int, sender: str = "") -> Any:
    """A ``GroupInfoEvent`` (a group changed); ``subject`` None: a change other than the name."""
    event = N.GroupInfoEvent(JID=parse_jid(group), Notify="", Sender=parse_jid(sender), Timestamp=ts_s,
                             PrevParticipantsVersionID="", ParticipantVersionID="", JoinReason="")
    if subject is not None:
        event.Name.CopyFrom(N.GroupName(Name=subject, NameSetAt=ts_s, NameSetBy=parse_jid(sender)))
    return event


def joined_group(info: Any) -> Any:
    """``JoinedGroup``: this account was added to (or created) the group ``info`` describes."""
    return N.JoinedGroup(Reason="", Type="", CreateKey="", GroupInfo=info, Sender=parse_jid(""),
                         SenderPN=parse_jid(""))


def connected() -> Any:
    return N.Connected(status=True)


def disconnected() -> Any:
    return N.Disconnected(status=True)


def logged_out(reason: str = "LOGGED_OUT", on_connect: bool = False) -> Any:
    return N.LoggedOut(OnConnect=on_connect, Reason=N.ConnectFailureReason.Value(reason))


def stream_replaced() -> Any:
    return N.StreamReplaced()


def offline_sync_preview(messages: int, receipts: int = 0) -> Any:
    return N.OfflineSyncPreview(Total=messages + receipts, AppDataChanges=0, Message=messages,
                                Notifications=0, Receipts=receipts)


def offline_sync_completed(count: int) -> Any:
    return N.OfflineSyncCompleted(Count=count)


def pair_status(paired: str, *, error: str = "") -> Any:
    status = N.PairStatus.ERROR if error else N.PairStatus.SUCCESS
    return N.PairStatus(ID=parse_jid(paired), BusinessName="", Platform="android", Status=status,
                        Error=error)


def qr(*codes: str) -> Any:
    return N.QR(Codes=list(codes))


def _is_media(content: Any) -> bool:
    return any(content.HasField(f) for f in ("imageMessage", "videoMessage", "audioMessage",
                                             "documentMessage", "stickerMessage"))


def message_from_bytes(data: bytes) -> Any:
    """A waE2E ``Message`` from its serialised bytes."""
    return E.Message.FromString(data)


def history_of(raw: RawEvent) -> Any:
    """The ``HistorySync`` payload (``Data``) of a HistorySync RawEvent."""
    return N.HistorySync.FromString(raw.data).Data


def message_ids(raw: RawEvent) -> list[str]:
    """Ids of the messages an event carries: a realtime Message's own id, or every message of a
    HistorySync's conversations; none for other events."""
    if raw.name == "Message":
        return [N.Message.FromString(raw.data).Info.ID]
    if raw.name == "HistorySync":
        return [item.message.key.ID for conv in history_of(raw).conversations for item in conv.messages]
    return []
