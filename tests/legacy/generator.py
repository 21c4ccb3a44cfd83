"""A database as the old Node backend left it, written straight into the Firestore emulator.

``write_scenario`` writes one small, hand-made database with every kind of defect
``docs/adopt.md`` lists, and ``EXPECTED`` says what a correct adoption leaves; ``write_bulk``
writes a large one (the same defects at fixed rates) for the bench. Documents are written with
the raw client, field for field as the old backend wrote them — never through our store,
which could not even decode some of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

ACCOUNT = "account_prod_0123456789abcdef0123456789abcdef"
OTHER = "account_prod_fedcba9876543210fedcba9876543210"
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
#: When the old backend stamped its placeholder summaries ("now" at a history chunk).
PLACEHOLDER = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

P1 = "40711111111@s.whatsapp.net"
P1_LID = "111111@lid"
P2 = "40722222222@s.whatsapp.net"
P2_LID = "222222@lid"
P3_LID = "333333@lid"
P6_LID = "666666@lid"
P4 = "40744444444@s.whatsapp.net"
P5 = "40755555555@s.whatsapp.net"
GROUP = "120363000000000001@g.us"

#: What the account's WhatsApp session knows (whatsmeow_lid_map): P2's LID only.
SESSION_LID_MAP = {P2_LID: P2}


def tid(jid: str, account: str = ACCOUNT) -> str:
    return f"{account}__{jid}"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _inbound(mid: str, jid: str, minutes: float, body: str, **extra: Any) -> dict[str, Any]:
    """A message as the old realtime/history path wrote it: Timestamp ``tsClient``, no
    ``tsClientMs``, whitespace-collapsed body, Baileys ``key``, ``createdAt`` rewritten."""
    return {
        "accountId": ACCOUNT, "clientJid": jid, "threadId": tid(jid), "waMessageId": mid,
        "direction": "inbound", "senderId": jid, "senderName": "", "body": body,
        "messageType": "text", "status": "delivered", "tsClient": at(minutes),
        "createdAt": PLACEHOLDER, "updatedAt": PLACEHOLDER, "tsSort": ms(at(minutes)),
        "key": {"id": mid, "remoteJid": jid, "fromMe": False, "timestamp": int(at(minutes).timestamp())},
        "stableKeyHash": None, "fingerprintHash": None, **extra,
    }


def scenario() -> dict[str, dict[str, Any]]:
    """Path -> fields of the hand-made legacy database."""
    docs: dict[str, dict[str, Any]] = {}

    def thread(jid: str, fields: dict[str, Any], messages: dict[str, dict[str, Any]], account: str = ACCOUNT) -> None:
        docs[f"threads/{tid(jid, account)}"] = {"accountId": account, "clientJid": jid, **fields}
        for mid, msg in messages.items():
            docs[f"threads/{tid(jid, account)}/messages/{mid}"] = msg

    # P1, by phone number: placeholder summary, stale lastMessageText, an outbound pair, an
    # optimistic send never echoed, a queued one, a wrapped image stored as "unknown".
    thread(P1, {
        "displayName": "Ana", "lastMessageAt": PLACEHOLDER, "lastMessageAtMs": ms(PLACEHOLDER),
        "lastMessagePreview": "hello 4", "lastMessageText": "an old text", "phone": "+40711111111",
        "phoneNumber": "+40711111111", "profilePictureUrl": "https://pps.example/ana.jpg", "archived": False,
        "lastMessageSenderName": "Ana",
    }, {
        **{f"m{i}": _inbound(f"m{i}", P1, i, f"hello {i}") for i in range(1, 5)},
        "m5": _inbound("m5", P1, 5, "", messageType="unknown",
                       media={"type": "image", "url": "https://mmg.example/5.jpg", "mimeType": "image/jpeg"}),
        "req-1": {
            "accountId": ACCOUNT, "clientJid": P1, "threadId": tid(P1), "direction": "outbound",
            "body": "sent from the app", "status": "sent", "clientMessageId": "req-1", "requestId": "req-1",
            "providerMessageId": "WA1", "tsClient": "2026-06-01T10:10:00.000Z", "tsServer": at(10),
            "createdAt": at(10),
        },
        "WA1": {
            **_inbound("WA1", P1, 10 + 2 / 60, "sent from the app", direction="outbound", status="delivered"),
            "key": {"id": "WA1", "remoteJid": P1, "fromMe": True, "timestamp": int(at(10 + 2 / 60).timestamp())},
        },
        "req-2": {
            "accountId": ACCOUNT, "clientJid": P1, "direction": "outbound", "body": "never echoed",
            "status": "sent", "clientMessageId": "req-2", "providerMessageId": "WA2",
            "tsClient": "2026-06-01T10:11:00.000Z",
        },
        "req-3": {
            "accountId": ACCOUNT, "clientJid": P1, "direction": "outbound", "body": "still queued",
            "status": "queued", "clientMessageId": "req-3", "tsClient": "2026-06-01T10:12:00Z",
        },
    })
    # P1 again, by LID, with the old backend's redirect: the newest messages are here.
    thread(P1_LID, {
        "displayName": "Ana", "isLid": True, "redirectTo": tid(P1), "lastMessageAt": PLACEHOLDER,
        "lastMessageAtMs": ms(PLACEHOLDER),
    }, {
        "m6": _inbound("m6", P1_LID, 20, "from the lid"),
        "m7": _inbound("m7", P1_LID, 21, "latest"),
    })
    # P2 only by LID; the session knows its number; no phone thread yet.
    thread(P2_LID, {"displayName": "Bogdan", "isLid": True, "lastMessageAt": PLACEHOLDER}, {
        "m8": _inbound("m8", P2_LID, 30, "p2 one"),
    })
    # P3 by LID, number unknown anywhere: stays a LID thread.
    thread(P3_LID, {"displayName": "Cristi", "isLid": True}, {"m9": _inbound("m9", P3_LID, 40, "p3")})
    # A contact known only by LID, with no name anywhere.
    thread(P6_LID, {"isLid": True}, {"m12": _inbound("m12", P6_LID, 45, "who am i")})
    # Receipts addressed by the raw device JID created orphan documents in a third thread.
    # (No thread document: the old receipt path wrote only the message documents.)
    raw = "40711111111:12@s.whatsapp.net"
    docs[f"threads/{tid(raw)}/messages/m3"] = {"status": "read", "updatedAt": at(60)}
    docs[f"threads/{tid(raw)}/messages/mX"] = {"status": "read", "updatedAt": at(61)}
    # A realtime message filed under the legacy c.us server.
    thread("40744444444@c.us", {"displayName": "Dana"}, {"m10": _inbound("m10", "40744444444@c.us", 50, "c.us message")})
    # A placeholder thread with no message at all.
    thread(P5, {"displayName": "Emil", "lastMessageAt": PLACEHOLDER, "lastMessageAtMs": ms(PLACEHOLDER),
                "lastMessagePreview": ""}, {})
    # A group: correct summary, stale lastMessageText.
    thread(GROUP, {
        "displayName": "Team", "isGroup": True, "lastMessageAt": at(70), "lastMessageAtMs": ms(at(70)),
        "lastMessagePreview": "standup", "lastMessageText": "yesterday's text", "lastMessageDirection": "inbound",
    }, {"m11": _inbound("m11", GROUP, 70, "standup", senderId="40799999999@s.whatsapp.net", senderName="Ion")})
    # The account: a run left "running" by a dead process, its own abandoned lease fields.
    docs[f"accounts/{ACCOUNT}"] = {
        "status": "connected", "waJid": "40700000000@s.whatsapp.net", "phoneE164": "+40700000000",
        "lastConnectedAt": at(-60),
        "lastAutoBackfillStatus": {"running": True, "startedAt": at(-30), "trigger": "periodic", "holder": "node-1"},
        "claimedBy": "node-1", "claimedAt": at(-30), "leaseUntil": at(-25),
        "autoBackfillLeaseHolder": "node-1", "autoBackfillLeaseUntil": at(-25), "autoBackfillLeaseAcquiredAt": at(-30),
    }
    # A second account whose documents are already right: adoption leaves it alone.
    docs[f"accounts/{OTHER}"] = {"state": "connected"}
    clean = "40766666666@s.whatsapp.net"
    docs[f"threads/{tid(clean, OTHER)}"] = {
        "accountId": OTHER, "clientJid": clean, "displayName": "Gina", "isGroup": False, "aliasJids": [],
        "lastMessageAt": at(80), "lastMessageAtMs": ms(at(80)), "lastMessagePreview": "hi",
        "lastMessageText": "hi", "lastMessageDirection": "inbound", "lastInboundAt": at(80),
        "lastInboundAtMs": ms(at(80)), "phoneE164": "+40766666666", "normalizedPhone": "+40766666666",
    }
    docs[f"threads/{tid(clean, OTHER)}/messages/g1"] = {
        "id": "g1", "waMessageId": "g1", "accountId": OTHER, "clientJid": clean, "threadId": tid(clean, OTHER),
        "direction": "inbound", "senderJid": clean, "senderName": "", "body": "hi", "messageType": "text",
        "status": "delivered", "tsClient": at(80), "tsClientMs": ms(at(80)),
    }
    return docs


def write(client: Any, docs: dict[str, dict[str, Any]]) -> None:
    batch, n = client.batch(), 0
    for path, fields in docs.items():
        batch.set(client.document(path), fields)
        n += 1
        if n == 400:
            batch.commit()
            batch, n = client.batch(), 0
    if n:
        batch.commit()


def bulk(accounts: int, threads: int, messages: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """The same defects at fixed rates, streamed: every thread has a placeholder summary and
    string-free Timestamp messages without ``tsClientMs``; every 10th thread is a LID thread
    redirected to its phone thread, every 20th message an optimistic outbound pair, every
    50th an orphan receipt in a raw-JID thread."""
    for a in range(accounts):
        account = f"account_prod_{a:032x}"
        yield f"accounts/{account}", {"status": "connected", "waJid": f"4070000{a:04d}@s.whatsapp.net",
                                      "lastAutoBackfillStatus": {"running": True, "trigger": "periodic"}}
        for t in range(threads):
            pn = f"4071{a:03d}{t:04d}@s.whatsapp.net"
            lid = f"9{a:03d}{t:05d}@lid"
            jid = lid if t % 10 == 9 else pn
            fields: dict[str, Any] = {"accountId": account, "clientJid": jid, "displayName": f"c{t}",
                                      "lastMessageAt": PLACEHOLDER, "lastMessageAtMs": ms(PLACEHOLDER)}
            if jid == lid:
                fields.update(isLid=True, redirectTo=f"{account}__{pn}")
            yield f"threads/{account}__{jid}", fields
            for m in range(messages):
                mid = f"{a}-{t}-{m}"
                msg = _inbound(mid, jid, m, f"message {m}")
                msg.update(accountId=account, threadId=f"{account}__{jid}")
                if m % 20 == 19:
                    yield f"threads/{account}__{jid}/messages/req-{mid}", {
                        "accountId": account, "clientJid": jid, "direction": "outbound", "body": "app",
                        "status": "sent", "clientMessageId": f"req-{mid}", "providerMessageId": mid,
                        "tsClient": at(m).isoformat()}
                    msg.update(direction="outbound")
                yield f"threads/{account}__{jid}/messages/{mid}", msg
                if m % 50 == 49:
                    raw = pn.replace("@", ":3@")
                    yield f"threads/{account}__{raw}/messages/{mid}", {"status": "read", "updatedAt": at(m)}
