"""What each legacy document should become: pure functions over raw field maps.

The Node backend's documents differ from docs/data-model.md in ways ``docs/adopt.md`` lists. Each rule
here takes a document's fields as stored and returns the fields it should have; the runner
(``wadaemon.adopt.runner``) diffs the two (``delta``) and writes only what differs. Because every
rule is a function of the stored state alone, applying it to its own output changes nothing:
that is what makes a second run, or a resumed run, write nothing more.

Two principles:

* **Conform, don't rebuild.** A legacy document keeps every field it has that does not
  contradict docs/data-model.md (``key``, ``media``, ``providerMessageId``, ``phone``, ``profilePictureUrl``
  …: the inbox reads some of them). Fields docs/data-model.md defines are made to hold the type and
  values it defines, so the daemon's typed readers (``MessageDoc``, ``ThreadDoc``) decode every
  adopted document.
* **Never guess a time.** ``tsClient`` comes from the document (Timestamp, ISO string, or the
  Baileys ``key.timestamp`` seconds); a document with no time of its own is not invented one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, get_args

import msgspec

from wadaemon.domain import (
    STATUS_RANK,
    MessageDoc,
    MessageType,
    SyncSource,
    datetime_to_ms,
    ms_to_datetime,
)
from wadaemon.identity import is_lid, is_pn, normalise_jid, phone_e164
from wadaemon.records import preview_of
from wadaemon.store.merge import placeholder_name

MESSAGE_TYPES: Final = frozenset(get_args(MessageType))
SYNC_SOURCES: Final = frozenset(get_args(SyncSource))
MEDIA_TYPES: Final = frozenset({"image", "video", "audio", "document", "sticker"})
_STATUS_ALIASES: Final = {"pending": "queued", "error": "failed", "server_ack": "sent", "ack": "sent"}
_SOURCE_ALIASES: Final = {"history": "history_sync", "realtime_upsert": "realtime", "send": "outbound"}
_TIME_FIELDS: Final = ("deliveredAt", "readAt", "tsServer", "createdAt", "updatedAt", "syncedAt",
                       "editedAt", "deletedAt")
_TEXT_FIELDS: Final = ("senderName", "body")
_OPTIONAL_TEXT_FIELDS: Final = ("mediaType", "mediaUrl", "mediaMimetype", "mediaFilename",
                                "editedBody", "quotedMessageId")

#: Thread fields only the old backend wrote; finding one means the account was not adopted.
LEGACY_THREAD_MARKERS: Final = ("isLid", "redirectTo", "canonicalThreadId", "migratedFrom",
                                "migratedTo", "lastMessageSenderName", "phoneNumber")
#: Account fields only the old backend wrote.
LEGACY_ACCOUNT_MARKERS: Final = ("waJid", "claimedBy", "claimedAt", "leaseUntil", "lastConnectedAt")
#: Account fields it wrote and nothing ever read (its own abandoned lease).
ORPHAN_ACCOUNT_FIELDS: Final = ("claimedBy", "claimedAt", "leaseUntil")
_BACKFILL_MIRROR: Final = ("autoBackfillLeaseHolder", "autoBackfillLeaseUntil", "autoBackfillLeaseAcquiredAt")


class Delta(msgspec.Struct, frozen=True):
    """Top-level fields to set and fields to delete."""

    fields: dict[str, Any]
    deleted: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.fields or self.deleted)


def delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> Delta:
    changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
    return Delta(changed, tuple(k for k in before if k not in after))


# -- times ------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """A Firestore Timestamp, an ISO-8601 string, or epoch milliseconds (an int, as the inbox
    reads it) -> an aware datetime at millisecond precision; None when it is none of these."""
    if isinstance(value, datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    elif isinstance(value, str) and value.strip():
        try:
            stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
    elif isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**14:
        return ms_to_datetime(value)
    else:
        return None
    return ms_to_datetime(datetime_to_ms(stamp.astimezone(UTC)))


def message_time(fields: Mapping[str, Any]) -> datetime | None:
    """WhatsApp's time of the message: ``tsClient``, else Baileys' ``key.timestamp`` (seconds)."""
    found = parse_time(fields.get("tsClient"))
    if found is not None:
        return found
    key = fields.get("key")
    if isinstance(key, dict):
        seconds = key.get("timestamp")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
            return ms_to_datetime(int(seconds * 1000))
    return None


# -- JIDs and threads ---------------------------------------------------------------------------


def jid_of_thread_id(account_id: str, thread_id: str) -> str:
    prefix = f"{account_id}__"
    return thread_id[len(prefix):] if thread_id.startswith(prefix) else ""


def clean_jid(jid: str) -> str:
    """Lower-case, no device suffix, ``c.us`` -> ``s.whatsapp.net`` (docs/data-model.md, identity's normal form)."""
    return normalise_jid(jid.strip().lower())


def canonical_jid(account_id: str, thread_id: str, fields: Mapping[str, Any], lid_map: Mapping[str, str]) -> str:
    """The canonical chat JID a legacy thread belongs to: where its own ``redirectTo`` /
    ``canonicalThreadId`` points (the old backend's record of the merge it meant), else its JID
    in normal form, resolved from LID to phone number when a mapping is known."""
    for name in ("redirectTo", "canonicalThreadId"):
        target = fields.get(name)
        if isinstance(target, str) and target:
            jid = clean_jid(jid_of_thread_id(account_id, target) or target)
            if "@" in jid:
                return jid
    jid = clean_jid(jid_of_thread_id(account_id, thread_id) or str(fields.get("clientJid") or ""))
    if is_lid(jid) and jid in lid_map:
        return lid_map[jid]
    return jid


def conform_thread(fields: Mapping[str, Any], *, account_id: str, client_jid: str) -> dict[str, Any]:
    """The thread's fields with docs/data-model.md's types; the old layout's markers of a merge it never
    finished (``redirectTo``, ``canonicalThreadId``, ``isLid``) dropped once the thread *is* the
    canonical one, because the inbox hides threads carrying them."""
    after = dict(fields)
    after["accountId"] = account_id
    after["clientJid"] = client_jid
    for name in ("redirectTo", "canonicalThreadId", "isLid"):
        after.pop(name, None)
    after["displayName"] = known_name(after)
    after["isGroup"] = client_jid.endswith("@g.us")
    aliases = after.get("aliasJids")
    after["aliasJids"] = list(dict.fromkeys(a for a in aliases if isinstance(a, str))) if isinstance(aliases, list) else []
    if after.get("lastMessageDirection") not in ("inbound", "outbound"):
        after.pop("lastMessageDirection", None)
    phone = phone_e164(client_jid) if is_pn(client_jid) else ""
    if phone:
        after["phoneE164"] = phone
        after["normalizedPhone"] = phone
    elif not after["displayName"]:
        after["displayName"] = placeholder_name(client_jid)  # else the inbox hides it (no name, no phone)
    for name in ("phoneE164", "normalizedPhone", "profilePictureUrl", "photoUrl", "avatarUrl"):
        if name in after and not isinstance(after[name], str):
            after.pop(name)  # the inbox hard-casts these to String
    _normalise_times(after, ("lastMessageAt", "lastInboundAt", "lastBackfillAt", "updatedAt"))
    return after


def known_name(fields: Mapping[str, Any]) -> str:
    """The thread's name as the old backend stored it under any of the names the inbox reads."""
    for name in ("displayName", "name", "pushName", "groupSubject", "lastMessageSenderName"):
        value = fields.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _normalise_times(fields: dict[str, Any], names: tuple[str, ...]) -> None:
    """Each of ``names`` present becomes a timestamp (``parse_time``), or is dropped when it
    holds nothing that reads as a time."""
    for name in names:
        if name in fields:
            stamp = parse_time(fields[name])
            if stamp is None:
                fields.pop(name)
            else:
                fields[name] = stamp


def with_alias(fields: Mapping[str, Any], alias: str) -> dict[str, Any]:
    after = dict(fields)
    if alias and alias != after.get("clientJid"):
        after["aliasJids"] = list(dict.fromkeys([*after.get("aliasJids", []), alias]))
    return after


def summary_fields(thread: Mapping[str, Any], newest: Mapping[str, Any] | None) -> dict[str, Any]:
    """The thread with its summary taken from its newest stored message (by ``tsClientMs``):
    what thread repair does, applied to the placeholder ``now`` times the old backend stamped
    on every history chunk. A thread with no message at all has no summary."""
    after = dict(thread)
    if newest is None:
        for name in ("lastMessageAt", "lastMessageAtMs", "lastMessagePreview", "lastMessageText",
                     "lastMessageDirection"):
            after.pop(name, None)
        return after
    doc = msgspec.convert(newest, MessageDoc, strict=False)
    preview = preview_of(doc)
    after.update(
        lastMessageAt=doc.ts_client,
        lastMessageAtMs=doc.ts_client_ms,
        lastMessagePreview=preview,
        lastMessageText=preview,
        lastMessageDirection=doc.direction,
    )
    if doc.direction == "inbound":
        after.update(lastInboundAt=doc.ts_client, lastInboundAtMs=doc.ts_client_ms)
    return after


# -- messages ---------------------------------------------------------------------------------


def is_orphan_receipt(fields: Mapping[str, Any]) -> bool:
    """A document the old receipt path created for a message it never had: no content and no
    time of its own."""
    return message_time(fields) is None and not fields.get("body") and not fields.get("media")


def conform_message(
    fields: Mapping[str, Any], *, message_id: str, account_id: str, client_jid: str
) -> dict[str, Any] | None:
    """The message's fields with docs/data-model.md's types and values (None when it has no time of its
    own: see ``is_orphan_receipt``)."""
    stamp = message_time(fields)
    if stamp is None:
        return None
    after = dict(fields)
    raw_key = after.get("key")
    key: dict[str, Any] = raw_key if isinstance(raw_key, dict) else {}
    from_me = key.get("fromMe")
    direction = after.get("direction")
    if direction not in ("inbound", "outbound"):
        direction = "outbound" if from_me is True else "inbound"
    thread_id = f"{account_id}__{client_jid}"
    after.update(
        id=message_id,
        accountId=account_id,
        clientJid=client_jid,
        threadId=thread_id,
        direction=direction,
        tsClient=stamp,
        tsClientMs=datetime_to_ms(stamp),
    )
    wa_id = after.get("waMessageId")
    if not isinstance(wa_id, str) or not wa_id:
        after["waMessageId"] = message_id
    sender = after.get("senderJid")
    if not isinstance(sender, str) or not sender:
        candidates = (after.get("senderId"), key.get("participant"))
        found = next((c for c in candidates if isinstance(c, str) and c), "")
        after["senderJid"] = clean_jid(found) if found else (client_jid if direction == "inbound" else "")
    for name in _TEXT_FIELDS:
        if not isinstance(after.get(name), str):
            after[name] = ""
    for name in _OPTIONAL_TEXT_FIELDS:
        if name in after and not isinstance(after[name], str):
            after.pop(name)
    raw_media = after.get("media")
    media: dict[str, Any] = raw_media if isinstance(raw_media, dict) else {}
    kind = after.get("messageType")
    if kind not in MESSAGE_TYPES:
        media_kind = media.get("type")
        after["messageType"] = media_kind if media_kind in MEDIA_TYPES else "other"
    if "mediaType" not in after and isinstance(media.get("type"), str) and media["type"]:
        after["mediaType"] = media["type"]
    if "mediaUrl" not in after and isinstance(media.get("url"), str) and media["url"]:
        after["mediaUrl"] = media["url"]
    after["status"] = _status(after.get("status"), direction)
    source = after.get("syncSource")
    if source not in SYNC_SOURCES:
        mapped = _SOURCE_ALIASES.get(source) if isinstance(source, str) else None
        if mapped is None:
            after.pop("syncSource", None)
        else:
            after["syncSource"] = mapped
    _normalise_times(after, _TIME_FIELDS)
    if "deleted" in after and not isinstance(after["deleted"], bool):
        after["deleted"] = bool(after["deleted"])
    reactions = after.get("reactions")
    if "reactions" in after and not (isinstance(reactions, dict)
                                     and all(isinstance(v, str) for v in reactions.values())):
        after.pop("reactions")
    return after


def _status(value: Any, direction: str) -> str:
    if isinstance(value, str):
        value = _STATUS_ALIASES.get(value, value)
        if value in STATUS_RANK:
            return str(value)
    return "sent" if direction == "outbound" else "delivered"


def best_status(a: Any, b: Any) -> Any:
    rank_a, rank_b = STATUS_RANK.get(a, -1), STATUS_RANK.get(b, -1)
    return a if rank_a >= rank_b else b


def fold_into(target: Mapping[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """Two documents of one message (a moved copy, a receipt orphan, the optimistic outbound
    twin): the target keeps its content and provenance and gains what it lacked; status is
    the furthest either reached, ``deliveredAt``/``readAt`` the earliest either saw."""
    after = {**incoming, **target}
    for name in ("body", "senderName", "mediaUrl", "mediaType", "quotedMessageId"):
        if not target.get(name) and incoming.get(name):
            after[name] = incoming[name]
    if "status" in incoming:
        after["status"] = best_status(target.get("status"), incoming["status"])
    for name in ("deliveredAt", "readAt"):
        times = [t for t in (parse_time(target.get(name)), parse_time(incoming.get(name))) if t is not None]
        if times:
            after[name] = min(times)
    return after


#: Set on an optimistic outbound document re-keyed to WhatsApp's id before its echo was seen.
REKEYED_FROM: Final = "adoptRekeyedFrom"


def fold_twins(there: Mapping[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """Two documents of one message meeting at one id: the one WhatsApp's own path wrote (the
    echo, a realtime or history copy) is the base; the optimistic send-path copy only adds
    its ids and status. Which one was there first does not matter: same result either way."""
    if REKEYED_FROM in there and REKEYED_FROM not in incoming:
        return {**fold_into(incoming, there), REKEYED_FROM: there[REKEYED_FROM]}
    return fold_into(there, incoming)


def outbound_twin_id(fields: Mapping[str, Any], message_id: str) -> str:
    """For the optimistic outbound document the old send path keyed by its own request id,
    the WhatsApp id of the message it became (its echo's document id); "" otherwise."""
    provider = fields.get("providerMessageId")
    own_ids = {fields.get("clientMessageId"), fields.get("requestId")}
    if isinstance(provider, str) and provider and provider != message_id and message_id in own_ids:
        return provider
    return ""


# -- accounts ---------------------------------------------------------------------------------


def account_fields(fields: Mapping[str, Any], *, lock: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The account with what a dead process left behind cleared: a ``running`` auto-backfill
    status (or ``lastBackfillStatus``) whose lock is gone or expired, the abandoned
    ``claimedBy``/``claimedAt``/``leaseUntil``, an expired ``autoBackfillLease*`` mirror. What
    was cleared is recorded under ``adoptCleared`` (the first value seen is kept)."""
    now_ms = datetime_to_ms(now)
    lock_live = bool(lock) and _ms(lock.get("expiresAtMs") if lock else None) > now_ms
    after = dict(fields)
    cleared: dict[str, Any] = {}
    status = after.get("lastAutoBackfillStatus")
    if isinstance(status, dict) and status.get("running") is True and not lock_live:
        cleared["lastAutoBackfillStatus"] = status
        after["lastAutoBackfillStatus"] = {
            "ok": False, "running": False, "errorCode": "stale_running_cleared",
            "errorMessage": "a run was left running by a process that stopped; cleared by adopt",
            "durationMs": 0,
        }
    if after.get("lastBackfillStatus") == "running" and not lock_live:
        cleared["lastBackfillStatus"] = "running"
        after["lastBackfillStatus"] = "error"
        after["lastBackfillError"] = "left running by a process that stopped; cleared by adopt"
    for name in ORPHAN_ACCOUNT_FIELDS:
        if name in after:
            cleared[name] = after.pop(name)
    if not lock_live and any(name in after for name in _BACKFILL_MIRROR):
        until = parse_time(after.get("autoBackfillLeaseUntil"))
        if until is None or datetime_to_ms(until) <= now_ms:
            for name in _BACKFILL_MIRROR:
                if name in after:
                    cleared[name] = after.pop(name)
    if cleared:
        record = dict(after.get("adoptCleared") or {})
        for name, value in cleared.items():
            record.setdefault(name, value)
        record.setdefault("clearedAt", now)
        after["adoptCleared"] = record
    return after


def _ms(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    stamp = parse_time(value)
    return datetime_to_ms(stamp) if stamp is not None else 0
