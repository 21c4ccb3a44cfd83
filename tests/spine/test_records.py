"""Events -> documents and thread summaries."""

from __future__ import annotations

from wadaemon.domain import ChatAddress, Media, MessageEvent
from wadaemon.records import message_doc, summarise

ACCOUNT = "acct"
PN = "40712345678@s.whatsapp.net"


def event(mid: str, ts_ms: int, *, from_me: bool = False, body: str = "hi", kind: str = "text",
          media: Media | None = None) -> MessageEvent:
    return MessageEvent(
        account_id=ACCOUNT, message_id=mid, chat=ChatAddress(PN), sender=ChatAddress(PN),
        sender_name="Ana", from_me=from_me, is_group=False, ts_ms=ts_ms,
        message_type=kind,  # type: ignore[arg-type]
        body=body, source="realtime", media=media,
    )


def test_message_doc_fields() -> None:
    doc = message_doc(event("M1", 1_700_000_000_123), client_jid=PN, sender_jid=PN, synced_ms=None)
    assert doc.thread_id == f"{ACCOUNT}__{PN}"
    assert doc.direction == "inbound" and doc.status == "delivered"
    assert doc.ts_client_ms == 1_700_000_000_123
    assert int(doc.ts_client.timestamp() * 1000) == 1_700_000_000_123
    assert doc.synced_at is None


def test_outbound_from_the_wire_is_sent_and_media_is_described() -> None:
    media = Media(type="image", mimetype="image/jpeg")
    doc = message_doc(event("M2", 5, from_me=True, body="", kind="image", media=media),
                      client_jid=PN, sender_jid="me@s.whatsapp.net", synced_ms=7)
    assert doc.direction == "outbound" and doc.status == "sent"
    assert doc.media_type == "image" and doc.media_mimetype == "image/jpeg"
    assert doc.synced_at is not None


def test_summary_takes_the_newest_by_whatsapp_timestamp_not_arrival() -> None:
    newer = message_doc(event("N", 2_000, body="newer"), client_jid=PN, sender_jid=PN, synced_ms=None)
    older = message_doc(event("O", 1_000, body="older"), client_jid=PN, sender_jid=PN, synced_ms=None)
    mine = message_doc(event("X", 1_500, from_me=True, body="mine"), client_jid=PN, sender_jid="me", synced_ms=None)
    [summary] = summarise([newer, older, mine])
    assert summary.last_message_ms == 2_000
    assert summary.last_message_preview == "newer"
    assert summary.last_inbound_ms == 2_000
    assert summary.display_name == "Ana"
    assert summary.phone_e164 == "+40712345678"


def test_summary_preview_of_media_without_caption() -> None:
    doc = message_doc(event("I", 1, body="", kind="image", media=Media(type="image")),
                      client_jid=PN, sender_jid=PN, synced_ms=None)
    [summary] = summarise([doc])
    assert summary.last_message_preview == "[image]"
