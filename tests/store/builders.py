"""Small builders for documents and store inputs, shared by the store, realtime and e2e tests.

Every builder takes the few fields a test cares about and fills the rest with plausible
defaults, so a test reads as the rule it checks rather than as a page of constructor calls.
"""

from __future__ import annotations

from typing import Any

from msgspec.structs import replace

from wadaemon.domain import (
    Direction,
    MessageDoc,
    MessageMutation,
    MessageStatus,
    MessageType,
    ReceiptKind,
    ReceiptUpdate,
    SyncSource,
    ThreadSummary,
    ms_to_datetime,
    thread_id_for,
)

ACCOUNT = "acct-1"
PEER = "40711111111@s.whatsapp.net"
PEER_LID = "123456789012345@lid"
GROUP = "120363000000000000@g.us"
OWN_JID = "40799999999@s.whatsapp.net"
#: A fixed epoch-ms origin: 2023-11-14T22:13:20Z.
T0 = 1_700_000_000_000


def tid(client_jid: str = PEER, account_id: str = ACCOUNT) -> str:
    return thread_id_for(account_id, client_jid)


def message(
    message_id: str = "m1",
    *,
    ts_ms: int = T0,
    client_jid: str = PEER,
    account_id: str = ACCOUNT,
    direction: Direction = "inbound",
    body: str = "hello",
    status: MessageStatus | None = None,
    source: SyncSource = "realtime",
    message_type: MessageType = "text",
    synced_ms: int | None = None,
    **fields: Any,
) -> MessageDoc:
    """A message document as ``records.message_doc`` would build it: inbound ``delivered``,
    outbound ``sent`` unless ``status`` says otherwise. Extra keyword fields are set as given."""
    doc = MessageDoc(
        id=message_id,
        wa_message_id=message_id,
        account_id=account_id,
        client_jid=client_jid,
        thread_id=thread_id_for(account_id, client_jid),
        direction=direction,
        sender_jid=client_jid if direction == "inbound" else OWN_JID,
        sender_name="Ana" if direction == "inbound" else "",
        ts_client=ms_to_datetime(ts_ms),
        ts_client_ms=ts_ms,
        body=body,
        message_type=message_type,
        status=status or ("delivered" if direction == "inbound" else "sent"),
        sync_source=source,
        synced_at=ms_to_datetime(synced_ms) if synced_ms is not None else None,
    )
    return replace(doc, **fields) if fields else doc


def queued(local_id: str = "local-1", *, ts_ms: int = T0, client_jid: str = PEER, body: str = "hi") -> MessageDoc:
    """An outbound message written before sending (``outbound.send_text``)."""
    return replace(
        message(local_id, ts_ms=ts_ms, client_jid=client_jid, direction="outbound", body=body,
                status="queued", source="outbound"),
        wa_message_id="",
    )


def summary(
    ts_ms: int | None = T0,
    *,
    client_jid: str = PEER,
    account_id: str = ACCOUNT,
    preview: str = "hello",
    direction: Direction | None = "inbound",
    inbound_ms: int | None = None,
    **fields: Any,
) -> ThreadSummary:
    """A thread summary for a newest message at ``ts_ms`` (None: a summary without a message).
    An inbound newest message also sets ``last_inbound_ms`` unless given."""
    if inbound_ms is None and direction == "inbound":
        inbound_ms = ts_ms
    return ThreadSummary(
        account_id=account_id,
        client_jid=client_jid,
        last_message_ms=ts_ms,
        last_message_preview=preview if ts_ms is not None else "",
        last_message_direction=direction if ts_ms is not None else None,
        last_inbound_ms=inbound_ms,
        **fields,
    )


def receipt(message_id: str, kind: ReceiptKind, ts_ms: int = T0 + 1_000, *, client_jid: str = PEER) -> ReceiptUpdate:
    return ReceiptUpdate(thread_id=tid(client_jid), message_id=message_id, kind=kind, ts_ms=ts_ms)


def edit(message_id: str, body: str, ts_ms: int = T0 + 1_000, *, client_jid: str = PEER) -> MessageMutation:
    return MessageMutation(thread_id=tid(client_jid), message_id=message_id, kind="edit", ts_ms=ts_ms, body=body)


def revoke(message_id: str, ts_ms: int = T0 + 1_000, *, client_jid: str = PEER) -> MessageMutation:
    return MessageMutation(thread_id=tid(client_jid), message_id=message_id, kind="revoke", ts_ms=ts_ms)


def reaction(
    message_id: str, reactor_jid: str, emoji: str, ts_ms: int = T0 + 1_000, *, client_jid: str = PEER
) -> MessageMutation:
    """``emoji == ""`` removes ``reactor_jid``'s reaction."""
    return MessageMutation(
        thread_id=tid(client_jid), message_id=message_id, kind="reaction", ts_ms=ts_ms,
        reactor_jid=reactor_jid, emoji=emoji,
    )
