"""Translation of genuine neonize protobufs (built by ``protos``) into domain events."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from neonize.proto import Neonize_pb2 as N
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as E
from neonize.proto.waWeb import WAWebProtobufsWeb_pb2 as W

from wadaemon.domain import (
    ChatAddress,
    ConnectionEvent,
    EditEvent,
    GroupChangeEvent,
    HistoryChunkEvent,
    LidMapping,
    Media,
    MessageEvent,
    OfflineSyncEvent,
    PairingEvent,
    ReactionEvent,
    ReceiptEvent,
    ReceiptKind,
    RejectedEvent,
    RevokeEvent,
    WhatsAppEvent,
)
from wadaemon.whatsapp import protos as P
from wadaemon.whatsapp.translate import translate, translate_many
from wadaemon.whatsapp.transport import RawEvent

ACC = "acc1"
PN = "40712345678@s.whatsapp.net"
LID = "123456789012345@lid"
OWN_PN = "40799999999@s.whatsapp.net"
OWN_LID = "999999999999999@lid"
GROUP = "120363000000000001@g.us"
TS_MS = 1_735_000_000_123


def tr(event: Any) -> list[WhatsAppEvent]:
    out = translate(ACC, P.raw(event))
    for item in out:  # domain events hold plain values only: they must encode
        msgspec.json.encode(item)
    return out


def one(event: Any) -> Any:
    out = tr(event)
    assert len(out) == 1, out
    return out[0]


def inbound(content: Any, **kw: Any) -> Any:
    fields: dict[str, Any] = {"chat": PN, "sender": "40712345678:3@s.whatsapp.net",
                              "message_id": "3A0001", "ts_ms": TS_MS, "pushname": "Ana"}
    fields.update(kw)
    return P.message_event(content=content, **fields)


# ---------------------------------------------------------------------------------------------
# Realtime messages
# ---------------------------------------------------------------------------------------------


def test_conversation_text_inbound_direct() -> None:
    event = one(inbound(P.text("hello")))
    assert event == MessageEvent(
        account_id=ACC, message_id="3A0001", chat=ChatAddress(PN), sender=ChatAddress(PN),
        sender_name="Ana", from_me=False, is_group=False, ts_ms=TS_MS, message_type="text",
        body="hello", source="realtime",
    )


def test_extended_text_reply_carries_quoted_id() -> None:
    event = one(inbound(P.extended_text("yes", quoted_id="3AQUOTED", quoted_participant=PN)))
    assert (event.message_type, event.body, event.quoted_message_id) == ("text", "yes", "3AQUOTED")


@pytest.mark.parametrize(("content", "mtype", "body", "media"), [
    (P.image("look", mimetype="image/png", url="https://mmg/x"), "image", "look",
     Media("image", "image/png", "", "https://mmg/x")),
    (P.video("clip"), "video", "clip", Media("video", "video/mp4")),
    (P.audio(), "audio", "", Media("audio", "audio/ogg; codecs=opus")),
    (P.document("offer.pdf", "the offer"), "document", "the offer",
     Media("document", "application/pdf", "offer.pdf")),
    (P.sticker(), "sticker", "", Media("sticker", "image/webp")),
])
def test_media(content: Any, mtype: str, body: str, media: Media) -> None:
    event = one(inbound(content))
    assert (event.message_type, event.body, event.media) == (mtype, body, media)


def test_media_caption_reply() -> None:
    content = P.image("see")
    content.imageMessage.contextInfo.stanzaID = "3AQ"
    assert one(inbound(content)).quoted_message_id == "3AQ"


def test_location_contact_poll() -> None:
    loc = one(inbound(P.location(44.4, 26.1, name="Office", address="Str. X 1")))
    assert (loc.message_type, loc.body) == ("location", "Office, Str. X 1")
    bare = one(inbound(P.location(44.5, 26.25)))
    assert bare.body == "44.5,26.25"
    card = one(inbound(P.contact("Ion Pop", "BEGIN:VCARD")))
    assert (card.message_type, card.body) == ("contact", "Ion Pop")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_poll_versions(version: int) -> None:
    event = one(inbound(P.poll("Lunch?", ["yes", "no"], version)))
    assert (event.message_type, event.body) == ("poll", "Lunch?")


def test_unknown_content_is_other_and_protocol_only_is_nothing() -> None:
    other = one(inbound(E.Message(groupInviteMessage=E.GroupInviteMessage(groupName="g"))))
    assert (other.message_type, other.body, other.media) == ("other", "", None)
    skdm = E.Message(senderKeyDistributionMessage=E.SenderKeyDistributionMessage(groupID=GROUP))
    assert tr(inbound(skdm)) == []
    key_share = E.Message(protocolMessage=E.ProtocolMessage(type=E.ProtocolMessage.APP_STATE_SYNC_KEY_SHARE))
    assert tr(inbound(key_share)) == []
    assert tr(inbound(E.Message())) == []


@pytest.mark.parametrize("wrapper", ["ephemeralMessage", "viewOnceMessage", "viewOnceMessageV2",
                                     "viewOnceMessageV2Extension", "documentWithCaptionMessage"])
def test_wrappers_are_unwrapped(wrapper: str) -> None:
    content = P.wrap(P.document("a.pdf", "cap"), wrapper)
    event = one(inbound(content))
    assert (event.message_type, event.body, event.media.filename) == ("document", "cap", "a.pdf")


def test_nested_wrappers() -> None:
    content = P.wrap(P.wrap(P.image("x"), "viewOnceMessageV2"), "ephemeralMessage")
    assert one(inbound(content)).message_type == "image"


def test_group_message_chat_is_group_sender_is_participant() -> None:
    event = one(P.message_event(chat=GROUP, sender=LID.replace("@", ":5@"), sender_alt=PN,
                                message_id="3AG", content=P.text("hi all"), ts_ms=TS_MS,
                                pushname="Ana"))
    assert event.chat == ChatAddress(GROUP)
    assert event.sender == ChatAddress(LID, PN)
    assert event.is_group and not event.from_me


def test_inbound_lid_chat_alt_from_sender_alt() -> None:
    event = one(P.message_event(chat=LID, sender="123456789012345:2@lid", sender_alt=PN,
                                message_id="3AL", content=P.text("x"), ts_ms=TS_MS))
    assert event.chat == ChatAddress(LID, PN)
    assert event.sender == ChatAddress(LID, PN)


def test_from_me_lid_chat_alt_from_recipient_alt() -> None:
    event = one(P.message_event(chat=LID, sender=OWN_LID.replace("@", ":0@"), sender_alt=OWN_PN,
                                recipient_alt=PN, from_me=True, message_id="3AM",
                                content=P.text("sent from phone"), ts_ms=TS_MS))
    assert event.from_me
    assert event.chat == ChatAddress(LID, PN)
    assert event.sender == ChatAddress(OWN_LID, OWN_PN)


def test_device_and_agent_suffixes_stripped() -> None:
    event = one(P.message_event(chat="40712345678.0:12@s.whatsapp.net", sender="40712345678.0:12@s.whatsapp.net",
                                message_id="3AD", content=P.text("x"), ts_ms=TS_MS))
    assert event.chat.jid == PN and event.sender.jid == PN


@pytest.mark.parametrize("chat", ["status@broadcast", "1234@broadcast", "120363111@newsletter"])
def test_non_thread_chats_dropped(chat: str) -> None:
    assert tr(P.message_event(chat=chat, sender=PN, message_id="3AS", content=P.text("x"),
                              ts_ms=TS_MS)) == []
    assert tr(P.receipt_event(chat=chat, sender=PN, message_ids=["a"], kind="READ", ts_s=1)) == []


def test_message_without_chat_or_id_rejected() -> None:
    event = one(P.message_event(chat="", sender=PN, message_id="3A", content=P.text("x"), ts_ms=1))
    assert isinstance(event, RejectedEvent)
    event = one(P.message_event(chat=PN, sender=PN, message_id="", content=P.text("x"), ts_ms=1))
    assert isinstance(event, RejectedEvent)


# ---------------------------------------------------------------------------------------------
# Edits, revokes, reactions
# ---------------------------------------------------------------------------------------------


def test_edit() -> None:
    target = P.key(LID, "3AORIG", from_me=True)
    event = one(P.message_event(chat=LID, sender=OWN_LID, recipient_alt=PN, from_me=True,
                                message_id="3AEDIT", content=P.edit(target, P.text("fixed")),
                                ts_ms=TS_MS, edit_attr="1"))
    assert event == EditEvent(ACC, ChatAddress(LID, PN), "3AORIG", "fixed", TS_MS)


def test_edit_of_caption() -> None:
    event = one(inbound(P.edit(P.key(PN, "3AIMG"), P.image("new caption")), edit_attr="1"))
    assert isinstance(event, EditEvent) and event.new_body == "new caption"


def test_edit_attr_without_protocol_message_rejected() -> None:
    assert isinstance(one(inbound(P.text("x"), edit_attr="1")), RejectedEvent)


def test_revoke() -> None:
    event = one(inbound(P.revoke(P.key(PN, "3AGONE")), edit_attr="7"))
    assert event == RevokeEvent(ACC, ChatAddress(PN), "3AGONE", TS_MS)


def test_reaction_and_removal_prefer_phone_number_sender() -> None:
    add = one(P.message_event(chat=GROUP, sender="123456789012345:1@lid", sender_alt=PN,
                              message_id="3AR", ts_ms=TS_MS,
                              content=P.reaction(P.key(GROUP, "3AT", from_me=True), "👍", TS_MS - 5)))
    assert add == ReactionEvent(ACC, ChatAddress(GROUP), "3AT", PN, "👍", TS_MS - 5)
    removed = one(inbound(P.reaction(P.key(PN, "3AT"), "")))
    assert isinstance(removed, ReactionEvent)
    assert (removed.emoji, removed.sender_jid, removed.ts_ms) == ("", PN, TS_MS)


# ---------------------------------------------------------------------------------------------
# Receipts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "from_me", "expected"), [
    ("DELIVERED", False, "delivered"),
    ("READ", False, "read"),
    ("PLAYED", False, "played"),
    ("READ_SELF", True, "read"),
    ("PLAYED_SELF", True, "played"),
    ("SERVER_ERROR", True, "played"),  # neonize 0.5.2's played-self
])
def test_receipt_kinds(kind: str, from_me: bool, expected: ReceiptKind) -> None:
    event = one(P.receipt_event(chat=LID, sender="123456789012345:4@lid", sender_alt=PN,
                                message_ids=["3A1", "3A2", "3A3"], kind=kind, ts_s=1_735_000_000,
                                from_me=from_me, recipient_alt=PN))
    assert event == ReceiptEvent(ACC, ChatAddress(LID, PN), ("3A1", "3A2", "3A3"), expected,
                                 1_735_000_000_000)


@pytest.mark.parametrize("kind", ["RETRY", "SENDER", "INACTIVE", "PEER_MSG", "HISTORY_SYNC", "SERVER_ERROR"])
def test_receipts_without_status_meaning_ignored(kind: str) -> None:
    assert tr(P.receipt_event(chat=PN, sender=PN, message_ids=["3A1"], kind=kind, ts_s=1)) == []


def test_group_receipt_chat_is_group() -> None:
    event = one(P.receipt_event(chat=GROUP, sender=LID, sender_alt=PN, message_ids=["3A1"],
                                kind="READ", ts_s=2))
    assert event.chat == ChatAddress(GROUP) and event.ts_ms == 2000


# ---------------------------------------------------------------------------------------------
# History sync
# ---------------------------------------------------------------------------------------------


def _history(sync_type: str = "INITIAL_BOOTSTRAP") -> Any:
    lid_chat = P.conversation(LID, [
        P.web_message(chat=LID, message_id="3AH1", content=P.text("old"), ts_s=1_700_000_000,
                      push_name="Ana"),
        P.web_message(chat=LID, message_id="3AH2", content=P.wrap(P.image("pic"), "ephemeralMessage"),
                      ts_s=1_700_000_060, from_me=True),
        P.web_message(chat=LID, message_id="3AH3", content=None, ts_s=1_700_000_100,
                      stub_type=W.WebMessageInfo.REVOKE),
        P.web_message(chat=LID, message_id="3AH4",
                      content=P.reaction(P.key(LID, "3AH1"), "❤"), ts_s=1_700_000_120),
    ], name="Ana Pop", pn_jid=PN, lid_jid=LID)
    group = P.conversation(GROUP, [
        P.web_message(chat=GROUP, message_id="3AG1", content=P.extended_text("reply", quoted_id="3AG0"),
                      ts_s=1_700_000_200, participant="55555:3@lid", push_name="Ion"),
    ], name="Team")
    status = P.conversation("status@broadcast", [
        P.web_message(chat="status@broadcast", message_id="3AST", content=P.text("story"), ts_s=5),
    ])
    return P.history_sync_event(sync_type, [lid_chat, group, status], chunk_order=2, progress=40,
                                lid_mappings=[("77777:2@lid", "40733333333:2@s.whatsapp.net")])


def test_history_chunk() -> None:
    chunk = one(_history())
    assert isinstance(chunk, HistoryChunkEvent)
    assert (chunk.sync_type, chunk.chunk_order, chunk.progress) == ("INITIAL_BOOTSTRAP", 2, 40)
    assert set(chunk.lid_mappings) == {LidMapping("77777@lid", "40733333333@s.whatsapp.net"),
                                       LidMapping(LID, PN)}
    assert [c.chat.jid for c in chunk.conversations] == [LID, GROUP]  # status dropped
    direct, group = chunk.conversations
    assert direct.chat == ChatAddress(LID, PN) and direct.name == "Ana Pop" and not direct.is_group
    assert [m.message_id for m in direct.messages] == ["3AH1", "3AH2"]  # stub and reaction skipped
    first, second = direct.messages
    assert first == MessageEvent(
        account_id=ACC, message_id="3AH1", chat=ChatAddress(LID, PN), sender=ChatAddress(LID, PN),
        sender_name="Ana", from_me=False, is_group=False, ts_ms=1_700_000_000_000,
        message_type="text", body="old", source="history_sync",
    )
    assert second.from_me and second.sender.jid == "" and second.message_type == "image"
    assert second.body == "pic" and second.ts_ms == 1_700_000_060_000
    (message,) = group.messages
    assert group.is_group and group.name == "Team"
    assert message.sender == ChatAddress("55555@lid") and message.is_group
    assert message.quoted_message_id == "3AG0"


@pytest.mark.parametrize(("sync_type", "source"), [
    ("INITIAL_BOOTSTRAP", "history_sync"), ("RECENT", "history_sync"), ("FULL", "history_sync"),
    ("ON_DEMAND", "backfill"), ("NON_BLOCKING_DATA", "history_sync"),
])
def test_history_sources(sync_type: str, source: str) -> None:
    chunk = one(_history(sync_type))
    assert chunk.sync_type == sync_type
    assert {m.source for c in chunk.conversations for m in c.messages} == {source}


def test_history_pn_chat_learns_lid_and_uses_mapping_list() -> None:
    chunk = one(P.history_sync_event("RECENT", [
        P.conversation(PN, [], lid_jid=LID),
        P.conversation("88888@lid", []),
    ], lid_mappings=[("88888@lid", "40788888888@s.whatsapp.net")]))
    pn_chat, lid_chat = chunk.conversations
    assert pn_chat.chat == ChatAddress(PN, LID)
    assert lid_chat.chat == ChatAddress("88888@lid", "40788888888@s.whatsapp.net")
    assert LidMapping(LID, PN) in chunk.lid_mappings


def test_push_name_chunk() -> None:
    chunk = one(P.history_sync_event("PUSH_NAME", chunk_order=9, progress=100,
                                     pushnames=[(PN, "Ana"), ("40700000001:3@s.whatsapp.net", "Ion"), ("x", "")]))
    assert chunk.conversations == ()
    assert chunk.pushnames == ((PN, "Ana"), ("40700000001@s.whatsapp.net", "Ion"))


# ---------------------------------------------------------------------------------------------
# Connection, pairing, names
# ---------------------------------------------------------------------------------------------


def test_lifecycle_events() -> None:
    assert one(P.connected()) == ConnectionEvent(ACC, "connected")
    assert one(P.disconnected()) == ConnectionEvent(ACC, "disconnected")
    assert one(P.logged_out()) == ConnectionEvent(ACC, "logged_out", reason="logged_out")
    assert one(P.stream_replaced()) == ConnectionEvent(ACC, "disconnected", reason="stream_replaced")
    assert one(P.offline_sync_preview(7, 3)) == OfflineSyncEvent(ACC, completed=False, messages=7)
    assert one(P.offline_sync_completed(7)) == OfflineSyncEvent(ACC, completed=True, messages=7)
    assert one(P.pair_status("40711111111:12@s.whatsapp.net")) == PairingEvent(
        ACC, paired_jid="40711111111@s.whatsapp.net")
    assert one(P.pair_status("", error="timeout")) == PairingEvent(ACC, error="timeout")
    assert one(P.qr("2@abc", "2@def")) == PairingEvent(ACC, qr="2@abc")
    assert tr(P.qr()) == []


def test_verified_business_name_when_no_push_name() -> None:
    event = inbound(P.text("hello"), pushname="")
    event.Info.VerifiedName.Details.verifiedName = "Shop SRL"
    assert one(event).sender_name == "Shop SRL"
    event.Info.Pushname = "Ana"
    assert one(event).sender_name == "Ana"  # the push name wins when both are set


def test_group_subject_changes_and_joins() -> None:
    assert one(P.group_info_event(group="120363000000000001:0@g.us", subject="Team", ts_s=17)) == (
        GroupChangeEvent(ACC, GROUP, "Team", 17_000))
    assert tr(P.group_info_event(group=GROUP, subject=None, ts_s=17)) == []  # not a name change
    joined = P.joined_group(P.group_info(group=GROUP, subject="New team", participants=[LID], name_set_s=9))
    assert one(joined) == GroupChangeEvent(ACC, GROUP, "New team", 9_000)
    (rejected,) = tr(P.group_info_event(group="", subject="x", ts_s=1))
    assert isinstance(rejected, RejectedEvent)


def test_unknown_name_rejected_and_ignored_names_dropped() -> None:
    (event,) = translate(ACC, RawEvent("FancyNewEvent", b"abc"))
    assert isinstance(event, RejectedEvent) and event.event_name == "FancyNewEvent"
    assert translate(ACC, RawEvent("ChatPresence", b"\x01\x02")) == []


@pytest.mark.parametrize("name", ["Message", "Receipt", "HistorySync", "LoggedOut", "PairStatus"])
def test_malformed_bytes_rejected(name: str) -> None:
    (event,) = translate(ACC, RawEvent(name, b"\xff\xff\xff\xff\x0f\x0a"))
    assert isinstance(event, RejectedEvent)
    assert event.event_name == name and event.reason


def test_translate_many() -> None:
    raws = [P.raw(P.connected()), P.raw(inbound(P.text("a"))), P.raw(P.disconnected())]
    assert [type(e).__name__ for e in translate_many(ACC, raws)] == [
        "ConnectionEvent", "MessageEvent", "ConnectionEvent"]


# ---------------------------------------------------------------------------------------------
# Built by hand: keeps the builders honest
# ---------------------------------------------------------------------------------------------


def _hand_jid(user: str, server: str, device: int = 0, empty: bool = False) -> Any:
    return N.JID(User=user, RawAgent=0, Device=device, Integrator=0, Server=server, IsEmpty=empty)


def test_hand_built_message_matches_builder_and_translates() -> None:
    source = N.MessageSource(
        Chat=_hand_jid("123456789012345", "lid"),
        Sender=_hand_jid("123456789012345", "lid", 7),
        IsFromMe=False, IsGroup=False, AddressingMode=N.AddressingMode.LID,
        SenderAlt=_hand_jid("40712345678", "s.whatsapp.net"),
        RecipientAlt=_hand_jid("", "", empty=True),
        BroadcastListOwner=_hand_jid("", "", empty=True),
    )
    info = N.MessageInfo(MessageSource=source, ID="3AHAND", ServerID=0, Type="text", Pushname="Ana",
                         Timestamp=TS_MS, Category="", Multicast=False, MediaType="", Edit="")
    content = E.Message(extendedTextMessage=E.ExtendedTextMessage(
        text="by hand", contextInfo=E.ContextInfo(stanzaID="3APREV")))
    event = N.Message(Info=info, Message=content, IsEphemeral=False, IsViewOnce=False,
                      IsViewOnceV2=False, IsViewOnceV2Extension=False, IsDocumentWithCaption=False,
                      IsLottieSticker=False, IsEdit=False, UnavailableRequestID="", RetryCount=0)
    data = event.SerializeToString()  # raises if a required field were missing
    (translated,) = translate(ACC, RawEvent("Message", data))
    assert translated == MessageEvent(
        account_id=ACC, message_id="3AHAND", chat=ChatAddress(LID, PN), sender=ChatAddress(LID, PN),
        sender_name="Ana", from_me=False, is_group=False, ts_ms=TS_MS, message_type="text",
        body="by hand", source="realtime", quoted_message_id="3APREV",
    )
    built = P.message_event(chat=LID, sender="123456789012345:7@lid", sender_alt=PN,
                            message_id="3AHAND", content=P.extended_text("by hand", quoted_id="3APREV"),
                            ts_ms=TS_MS, pushname="Ana")
    assert translate(ACC, P.raw(built)) == [translated]
    assert built.Info.MessageSource == source


def test_hand_built_receipt() -> None:
    source = N.MessageSource(
        Chat=_hand_jid("40712345678", "s.whatsapp.net"), Sender=_hand_jid("40712345678", "s.whatsapp.net", 2),
        IsFromMe=False, IsGroup=False, SenderAlt=_hand_jid("", "", empty=True),
        RecipientAlt=_hand_jid("", "", empty=True), BroadcastListOwner=_hand_jid("", "", empty=True))
    receipt = N.Receipt(MessageSource=source, MessageIDs=["a", "b"], Timestamp=1_700_000_001,
                        Type=N.Receipt.READ)
    (event,) = translate(ACC, RawEvent("Receipt", receipt.SerializeToString()))
    assert event == ReceiptEvent(ACC, ChatAddress(PN), ("a", "b"), "read", 1_700_000_001_000)


def test_device_sent_wrapper_unwrapped() -> None:
    content = E.Message(deviceSentMessage=E.DeviceSentMessage(destinationJID=PN, message=P.text("mine")))
    event = one(inbound(content, from_me=True))
    assert (event.message_type, event.body, event.from_me) == ("text", "mine", True)


# ---------------------------------------------------------------------------------------------
# Ids and JIDs that cannot become document ids (hardening: a poison event wedged its account)
# ---------------------------------------------------------------------------------------------

GARBAGE_CHATS = ["garbage@", "@s.whatsapp.net", "123@unknown.server", "../../x@s.whatsapp.net",
                 "1" * 40 + "@s.whatsapp.net", "12ab@lid", "x/y@g.us"]


@pytest.mark.parametrize("chat", GARBAGE_CHATS)
def test_garbage_chat_jid_rejected_with_reason(chat: str) -> None:
    raw = P.message_event(chat=PN, sender=PN, message_id="3A01", content=P.text("x"), ts_ms=1)
    user, _, server = chat.partition("@")
    raw.Info.MessageSource.Chat.User, raw.Info.MessageSource.Chat.Server = user, server
    event = one(raw)
    assert isinstance(event, RejectedEvent) and ("JID" in event.reason or "without chat" in event.reason)


@pytest.mark.parametrize("message_id", ["x" * 2000, "a/b", "3A 01", "ü"])
def test_unusable_message_id_rejected(message_id: str) -> None:
    event = one(P.message_event(chat=PN, sender=PN, message_id=message_id, content=P.text("x"), ts_ms=1))
    assert isinstance(event, RejectedEvent) and "message id" in event.reason


def test_receipt_keeps_usable_ids_and_reports_the_rest() -> None:
    out = tr(P.receipt_event(chat=PN, sender=PN, message_ids=["3AOK", "y" * 2000], kind="READ", ts_s=1))
    assert isinstance(out[0], ReceiptEvent) and out[0].message_ids == ("3AOK",)
    assert isinstance(out[1], RejectedEvent)


def test_history_chunk_leaves_out_bad_conversations_and_ids_and_keeps_the_rest() -> None:
    good = P.conversation(PN, [P.web_message(chat=PN, message_id="3AGOOD", content=P.text("a"), ts_s=1),
                               P.web_message(chat=PN, message_id="z" * 1600, content=P.text("b"), ts_s=2)])
    bad = P.conversation("../../x@s.whatsapp.net",
                         [P.web_message(chat=PN, message_id="3AB", content=P.text("c"), ts_s=3)])
    out = tr(P.history_sync_event("FULL", [good, bad]))
    chunk = out[-1]
    assert isinstance(chunk, HistoryChunkEvent)
    assert [m.message_id for c in chunk.conversations for m in c.messages] == ["3AGOOD"]
    reasons = [e.reason for e in out if isinstance(e, RejectedEvent)]
    assert len(reasons) == 2 and any("conversation left out" in r for r in reasons)


def test_garbage_alternate_jid_is_ignored_not_learned() -> None:
    raw = P.message_event(chat=LID, sender=LID, sender_alt=PN, message_id="3A02", content=P.text("x"), ts_ms=1)
    raw.Info.MessageSource.SenderAlt.User = "../x"
    event = one(raw)
    assert isinstance(event, MessageEvent) and event.chat.alt_jid == ""
