"""Domain events -> documents and thread summaries.

The one place that knows how a translated WhatsApp event becomes a ``MessageDoc`` and what a
batch of messages says about its threads. Callers resolve identity first (``IdentityResolver``)
and pass canonical JIDs in.
"""

from __future__ import annotations

from collections.abc import Iterable

from wadaemon.domain import (
    MessageDoc,
    MessageEvent,
    ThreadSummary,
    ms_to_datetime,
    thread_id_for,
)
from wadaemon.identity import phone_e164


def message_doc(event: MessageEvent, *, client_jid: str, sender_jid: str, synced_ms: int | None) -> MessageDoc:
    """The document of a message. ``synced_ms`` is set for history/backfill writes.

    Inbound messages are stored ``delivered`` (they reached us); outbound ones seen on the wire
    were accepted by the server, so ``sent``.
    """
    media = event.media
    return MessageDoc(
        id=event.message_id,
        wa_message_id=event.message_id,
        account_id=event.account_id,
        client_jid=client_jid,
        thread_id=thread_id_for(event.account_id, client_jid),
        direction="outbound" if event.from_me else "inbound",
        sender_jid=sender_jid,
        sender_name=event.sender_name,
        body=event.body,
        message_type=event.message_type,
        media_type=media.type if media else None,
        media_url=(media.url or None) if media else None,
        media_mimetype=(media.mimetype or None) if media else None,
        media_filename=(media.filename or None) if media else None,
        status="sent" if event.from_me else "delivered",
        ts_client=ms_to_datetime(event.ts_ms),
        ts_client_ms=event.ts_ms,
        synced_at=ms_to_datetime(synced_ms) if synced_ms is not None else None,
        sync_source=event.source,
        quoted_message_id=event.quoted_message_id or None,
    )


def summarise(
    docs: Iterable[MessageDoc],
    *,
    names: dict[str, str] | None = None,
    groups: set[str] | None = None,
    backfilled_at_ms: int | None = None,
) -> list[ThreadSummary]:
    """One summary per thread touched by ``docs``: the newest message by WhatsApp's timestamp
    (never by arrival time), the newest inbound one, and the best known display name.

    ``names`` maps client JID -> display name (group subject or contact push name) when the
    caller knows better than the messages' sender names.
    """
    newest: dict[str, MessageDoc] = {}
    newest_inbound: dict[str, int] = {}
    inbound_name: dict[str, str] = {}
    account: dict[str, str] = {}
    for doc in docs:
        jid = doc.client_jid
        account[jid] = doc.account_id
        current = newest.get(jid)
        if current is None or doc.ts_client_ms > current.ts_client_ms:
            newest[jid] = doc
        if doc.direction == "inbound" and doc.ts_client_ms > newest_inbound.get(jid, -1):
            newest_inbound[jid] = doc.ts_client_ms
            if doc.sender_name and doc.sender_jid == jid:
                inbound_name[jid] = doc.sender_name
    names = names or {}
    groups = groups or set()
    return [
        ThreadSummary(
            account_id=account[jid],
            client_jid=jid,
            display_name=names.get(jid) or inbound_name.get(jid, ""),
            is_group=jid in groups or jid.endswith("@g.us"),
            last_message_ms=doc.ts_client_ms,
            last_message_preview=preview_of(doc),
            last_message_direction=doc.direction,
            last_inbound_ms=newest_inbound.get(jid),
            phone_e164=phone_e164(jid),
            backfilled_at_ms=backfilled_at_ms,
        )
        for jid, doc in newest.items()
    ]


def renamed(account_id: str, names: dict[str, str], *, is_group: bool = False) -> list[ThreadSummary]:
    """Name-only summaries for threads that may exist: applied to those that do, creating none."""
    return [ThreadSummary(account_id=account_id, client_jid=jid, display_name=name, is_group=is_group, create=False)
            for jid, name in names.items() if name]


def preview_of(doc: MessageDoc) -> str:
    """Text for ``lastMessagePreview``: the body, or the media kind in brackets."""
    if doc.body:
        return doc.body[:100]
    if doc.message_type != "text":
        return f"[{doc.message_type}]"
    return ""
