"""The Flutter inbox, as a client of our Firestore: its queries and its rules, restated in Python.

Each function names the file of the inbox's ``lib/`` it restates (the app is Dart; these are
our own words for what its code does, so that a change of ours that would hide a conversation
from the business fails here). Queries run with the real google-cloud-firestore client, exactly
as the app builds them, against the emulator.

* ``utils/threads_query.dart``: ``threads`` where ``accountId ==`` ordered by ``lastMessageAt``
  descending, limit 100 (``screens/whatsapp/my_inbox_screen.dart``: the same with 200). A
  thread without ``lastMessageAt`` is not in the answer at all.
* the inbox screens (``staff_inbox_screen.dart``, ``whatsapp_inbox_screen.dart``,
  ``employee_inbox_screen.dart``, ``my_inbox_screen.dart``) build each row as
  ``{'id': doc.id, ...doc.data(), 'accountId': id, 'accountName': name}`` — a stored ``id``
  overrides the document id — then drop hidden threads, then rows that would only show a
  placeholder (no name and no phone).
* ``models/thread_model.dart``: how a row becomes the name, phone, preview and time shown.
* ``screens/whatsapp/whatsapp_chat_screen.dart``: the chat's query, its duplicate rule and
  which messages it shows.
* ``services/whatsapp_api_service.dart`` (``getAccounts``): the accounts come from the backend's
  ``GET /api/whatsapp/accounts``, not from Firestore; the screens list the threads of those
  whose ``status`` is ``connected``.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, NamedTuple

from google.cloud import firestore
from google.cloud.firestore_v1 import FieldFilter

#: ``utils/threads_query.dart`` (100) and ``screens/whatsapp/my_inbox_screen.dart`` (200).
THREAD_LIST_LIMITS = (100, 200)
#: ``screens/whatsapp/whatsapp_chat_screen.dart``.
CHAT_LIMIT = 200

#: Thread fields read with a hard ``as String?`` cast somewhere: any other type throws.
#: ``models/thread_model.dart``: profilePictureUrl, photoUrl, avatarUrl, accountId, accountName;
#: ``my_inbox_screen.dart`` / ``employee_inbox_screen.dart``: redirectTo, clientJid, id.
STRING_CAST_FIELDS = ("profilePictureUrl", "photoUrl", "avatarUrl", "accountId", "accountName",
                      "redirectTo", "clientJid", "id")

_PHONE_LIKE = re.compile(r"^\+?[\d\s\-\(\)]{6,}$")


def connected_accounts(body: Any) -> list[str]:
    """``getAccounts`` and the screens' filter: ``data['accounts'] as List?``, ``data['waMode']
    as String?``, and per account ``id``, ``name``, ``status``, ``phone``, ``phoneNumber``,
    ``qrCode``, ``pairingCode`` each ``as String?``; the ids of those ``connected``."""
    assert isinstance(body, dict), "SafeJson.tryDecodeJsonMap wants a JSON object"
    accounts = body.get("accounts")
    assert accounts is None or isinstance(accounts, list)
    assert body.get("waMode") is None or isinstance(body["waMode"], str)
    ids = []
    for account in accounts or []:
        assert isinstance(account, dict)
        for key in ("id", "name", "status", "phone", "phoneNumber", "qrCode", "pairingCode"):
            assert account.get(key) is None or isinstance(account[key], str), (key, account.get(key))
        if account.get("status") == "connected" and account.get("id"):
            ids.append(str(account["id"]))
    return ids


def thread_list_query(client: Any, account_id: str, limit: int = 100) -> Any:
    return (client.collection("threads")
            .where(filter=FieldFilter("accountId", "==", account_id))
            .order_by("lastMessageAt", direction=firestore.Query.DESCENDING)
            .limit(limit))


def chat_query(client: Any, thread_id: str) -> Any:
    return (client.collection("threads").document(thread_id).collection("messages")
            .order_by("tsClient", direction=firestore.Query.DESCENDING)
            .limit(CHAT_LIMIT))


def thread_rows(client: Any, account_id: str, *, account_name: str = "Shop", limit: int = 100) -> list[dict[str, Any]]:
    """The rows the inbox screens build from the list query's snapshot."""
    return [{"id": snap.id, **(snap.to_dict() or {}), "accountId": account_id, "accountName": account_name}
            for snap in thread_list_query(client, account_id, limit).stream()]


# --------------------------------------------------------------------------------------------
# models/thread_model.dart
# --------------------------------------------------------------------------------------------


def read_string(value: Any, map_keys: tuple[str, ...] = ()) -> str:
    """``_readString``: a string as is, a number as text, a map's first string key, else ""."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in map_keys:
            if isinstance(value.get(key), str):
                return str(value[key])
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def read_first(row: dict[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = read_string(row.get(key)).strip()
        if value:
            return value
    return ""


def looks_like_phone(value: str) -> bool:
    text = value.strip()
    return bool(text) and ("@" in text or bool(_PHONE_LIKE.match(text)))


def phone_from_jid(jid: str) -> str | None:
    """``_extractPhoneFromJid``: never for ``@lid`` or ``@broadcast``; 6-15 digits."""
    if not jid or "@lid" in jid or "@broadcast" in jid:
        return None
    digits = re.sub(r"\D", "", jid.split("@")[0])
    return f"+{digits}" if 6 <= len(digits) <= 15 else None


def time_ms(value: Any) -> int | None:
    """``_parseTime``: a Timestamp, ``{_seconds}``, an int (ms above 1e12, else seconds), ISO text."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dict) and isinstance(value.get("_seconds"), int):
        return int(value["_seconds"]) * 1000
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 1e12 else value * 1000
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp() * 1000)
        except ValueError:
            return None
    return None


class ThreadModel(NamedTuple):
    thread_id: str
    display_name: str
    client_jid: str
    last_message_text: str
    last_message_at_ms: int | None
    normalized_phone: str | None
    phone: str | None
    last_message_direction: str | None
    group_subject: str | None


def thread_model(row: dict[str, Any]) -> ThreadModel:
    """``ThreadModel.fromJson``."""
    for key in ("profilePictureUrl", "photoUrl", "avatarUrl", "accountId", "accountName"):
        value = row.get(key)
        assert value is None or isinstance(value, str), f"thread_model.dart casts {key} to String: {value!r}"
    thread_id = read_first(row, ("threadId", "id"))
    jid = read_first(row, ("clientJid", "canonicalJid", "jid", "remoteJid"))
    display_name = read_first(row, ("displayName", "name", "pushName"))
    group_subject = read_string(row.get("groupSubject")).strip()
    last_sender = read_string(row.get("lastMessageSenderName")).strip()
    text = read_first(row, ("lastMessageText", "lastMessagePreview", "lastMessageBody", "lastMessage"))
    normalized = read_first(row, ("normalizedPhone", "phoneE164", "phone", "phoneNumber")).strip()
    phone = normalized or phone_from_jid(jid)
    if display_name.strip() and text.strip() and display_name.strip().lower() == text.strip().lower():
        display_name = ""  # the model's "safety net": a name equal to the preview is distrusted
    if not display_name or looks_like_phone(display_name):
        if group_subject and not looks_like_phone(group_subject):
            display_name = group_subject
        elif last_sender and not looks_like_phone(last_sender):
            display_name = last_sender
    if (not display_name or looks_like_phone(display_name)) and phone and not jid.endswith("@broadcast"):
        display_name = phone  # formatted with spaces in the app; the text does not matter here
    at_ms = row["lastMessageAtMs"] if isinstance(row.get("lastMessageAtMs"), int) else time_ms(row.get("lastMessageAt"))
    if at_ms is None:
        at_ms = time_ms(row.get("updatedAt"))
    direction = read_string(row.get("lastMessageDirection")).strip().lower()
    return ThreadModel(
        thread_id=thread_id, display_name=display_name, client_jid=jid, last_message_text=text,
        last_message_at_ms=at_ms, normalized_phone=normalized or None, phone=phone,
        last_message_direction=direction if direction in ("inbound", "outbound") else None,
        group_subject=group_subject or None,
    )


# --------------------------------------------------------------------------------------------
# the inbox screens: which rows are shown
# --------------------------------------------------------------------------------------------


def hidden(row: dict[str, Any]) -> bool:
    """The screens' filter before the model: hidden/archived, any redirectTo, a LID thread with
    a canonicalThreadId, broadcast chats, corrupted ids."""
    for key in ("redirectTo", "clientJid", "id"):
        value = row.get(key)
        assert value is None or isinstance(value, str), f"the inbox screens cast {key} to String: {value!r}"
    jid = read_string(row.get("clientJid"), ("canonicalJid", "jid", "clientJid", "remoteJid")).strip()
    tid = read_string(row.get("id")).strip()
    return (row.get("hidden") is True or row.get("archived") is True
            or bool(read_string(row.get("redirectTo")).strip())
            or (jid.endswith("@lid") and bool(read_string(row.get("canonicalThreadId")).strip()))
            or jid.endswith("@broadcast")
            or "[object Object]" in tid)


def placeholder_only(model: ThreadModel) -> bool:
    """``_isPlaceholderOnly``: nothing to show but "Contact" / "Grup" / "Conversație"."""
    return not model.display_name.strip() and not (model.normalized_phone or model.phone or "").strip()


def listed(rows: list[dict[str, Any]]) -> list[ThreadModel]:
    """The conversations the business sees, newest first (as the screens sort them)."""
    models = [thread_model(row) for row in rows if not hidden(row)]
    shown = [m for m in models if not placeholder_only(m)]
    return sorted(shown, key=lambda m: (-(m.last_message_at_ms or 0), m.thread_id))


# --------------------------------------------------------------------------------------------
# screens/whatsapp/whatsapp_chat_screen.dart
# --------------------------------------------------------------------------------------------


def as_string(value: Any) -> str | None:
    """``_asString``: None stays None, a map gives its first text, anything else its text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("text", "body", "caption", "message", "content", "displayName", "name"):
            if isinstance(value.get(key), str) and value[key].strip():
                return str(value[key])
        return str(value)
    return str(value)


class ChatMessage(NamedTuple):
    doc_id: str
    direction: str
    body: str
    status: str | None
    media_type: str | None
    sender_name: str | None
    ts_ms: int | None


def _ts_ms(value: Any) -> int | None:
    """``_extractTsMillis``: a Timestamp, ISO text, or an int read as milliseconds."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp() * 1000)
        except ValueError:
            return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _sort_ms(data: dict[str, Any]) -> int:
    if isinstance(data.get("createdAtMs"), int):
        return int(data["createdAtMs"])
    for key in ("tsClient", "createdAt", "tsServer"):
        found = _ts_ms(data.get(key))
        if found is not None:
            return found
    return 2**62  # "now": the app puts a message without any time at the bottom


def _dedupe(docs: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """``_dedupeMessageDocs``: one row per stableKeyHash / fingerprintHash / providerMessageId /
    waMessageId / clientMessageId, else per (direction, body, time bucket)."""

    def score(data: dict[str, Any]) -> int:
        points = 4 if as_string(data.get("providerMessageId")) else 0
        points += 3 if as_string(data.get("waMessageId")) else 0
        points += 2 if (as_string(data.get("status")) or "") in ("sent", "delivered", "read") else 0
        points += 1 if isinstance(data.get("createdAtMs"), int) else 0
        return points + (1 if as_string(data.get("clientMessageId")) else 0)

    by_key: dict[str, tuple[str, dict[str, Any]]] = {}
    for doc_id, data in docs:
        if data.get("isDuplicate") is True:
            continue
        wa = as_string(data.get("waMessageId"))
        direction = as_string(data.get("direction")) or "inbound"
        body = (as_string(data.get("body")) or "").strip()
        ms = _sort_ms(data)
        bucket = 5 if direction == "outbound" else 1
        fallback = f"fallback:{direction}|{body}|{math.floor(ms / (bucket * 1000)) if ms > 0 else None}"
        primary = fallback
        for prefix, key in (("stable", "stableKeyHash"), ("fp", "fingerprintHash"),
                            ("provider", "providerMessageId"), ("wa", "waMessageId"),
                            ("client", "clientMessageId")):
            if as_string(data.get(key)):
                primary = f"{prefix}:{as_string(data.get(key))}"
                break
        if primary in by_key:
            if score(data) > score(by_key[primary][1]):
                by_key[primary] = (doc_id, data)
            continue
        existing = by_key.get(fallback)
        if existing is not None:
            existing_wa = bool(as_string(existing[1].get("waMessageId")))
            if existing_wa and not wa:
                continue
            if not existing_wa and wa:
                by_key[fallback] = by_key[primary] = (doc_id, data)
                continue
        by_key[primary] = (doc_id, data)
        by_key.setdefault(fallback, (doc_id, data))
    first_by_doc: dict[str, tuple[str, dict[str, Any]]] = {}
    for item in by_key.values():
        first_by_doc.setdefault(item[0], item)
    return list(first_by_doc.values())


def chat(client: Any, thread_id: str) -> list[ChatMessage]:
    """The messages the chat screen shows, newest first."""
    docs = [(snap.id, snap.to_dict() or {}) for snap in chat_query(client, thread_id).stream()]
    shown = []
    for doc_id, data in sorted(_dedupe(docs), key=lambda item: (-_sort_ms(item[1]), item[0])):
        body = (as_string(data.get("body")) or "").strip()
        media = data.get("media") if isinstance(data.get("media"), dict) else None
        media_type = as_string(data.get("mediaType"))
        if media_type is None and media is not None:
            media_type = as_string(media.get("type"))
        if not body and media_type is None:
            continue  # "protocol/system messages with no text and no media" are not shown
        shown.append(ChatMessage(
            doc_id=doc_id, direction=as_string(data.get("direction")) or "inbound", body=body,
            status=as_string(data.get("status")), media_type=media_type,
            sender_name=as_string(data.get("senderName")), ts_ms=_ts_ms(data.get("tsClient")),
        ))
    return shown
