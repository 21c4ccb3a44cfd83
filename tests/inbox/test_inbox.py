"""The Flutter inbox as a client: every conversation the daemon stores shows up in it.

End to end on the Firestore emulator: simulated phones deliver through the real journal,
translation and actors; then the inbox's own queries (``app.py``) read what was written and
its own rules decide what the business sees. A change that would hide a conversation — a
thread without ``lastMessageAt``, without a name and a phone, with a field of the wrong type,
a message the chat would not show — fails here.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.inbox import app
from tests.spine.harness import running, settings_for, settle
from wadaemon.domain import thread_id_for
from wadaemon.store.firestore import FirestoreStore
from wadaemon.store.merge import placeholder_name
from wadaemon.whatsapp import protos as P
from wadaemon.whatsapp.simphone import SimPhone

pytestmark = pytest.mark.firestore

ACCOUNT = "account_prod_0123456789abcdef0123456789abcdef"


def stored_threads(store: FirestoreStore) -> dict[str, dict[str, Any]]:
    """Every thread document of the account, raw, by document id."""
    return {snap.id: snap.to_dict() for snap in store.client.collection("threads").stream()
            if (snap.to_dict() or {}).get("accountId") == ACCOUNT}


def check_documents(store: FirestoreStore) -> None:
    """What the inbox's casts and overrides need of every document we wrote."""
    for doc_id, data in stored_threads(store).items():
        for key in app.STRING_CAST_FIELDS:
            assert key not in data or isinstance(data[key], str), (doc_id, key, data.get(key))
        for key in ("id", "threadId"):  # either would override the document id in the inbox
            assert data.get(key, doc_id) == doc_id, (doc_id, key)
        assert data.get("lastMessageText") == data.get("lastMessagePreview"), doc_id
        assert data.get("normalizedPhone") == data.get("phoneE164"), doc_id
        assert isinstance(data.get("displayName", ""), str)
        for snap in store.client.collection("threads").document(doc_id).collection("messages").stream():
            message = snap.to_dict() or {}
            assert message.get("id") == snap.id and message.get("threadId") == doc_id
            for key in ("body", "direction", "status", "senderName", "waMessageId", "clientJid"):
                assert isinstance(message.get(key, ""), str), (snap.id, key)


def inbox(store: FirestoreStore, limit: int = 100) -> dict[str, app.ThreadModel]:
    """The conversations the business sees, by thread id."""
    return {model.thread_id: model for model in app.listed(app.thread_rows(store.client, ACCOUNT, limit=limit))}


async def test_every_conversation_of_the_pairing_history_is_listed_and_readable(
        firestore_store: FirestoreStore, tmp_path: Path) -> None:
    store = firestore_store
    phone = SimPhone(ACCOUNT, seed=21, chats=14, history_messages=700)
    async with running(settings_for(tmp_path), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
    check_documents(store)
    threads = stored_threads(store)
    assert len(threads) == 14
    for limit in app.THREAD_LIST_LIMITS:
        assert set(inbox(store, limit)) == set(threads)  # every thread with a message is shown
    for tid, model in inbox(store).items():
        chat = phone.chat(threads[tid]["clientJid"])
        assert model.display_name  # a name, or the phone number the inbox formats
        assert model.last_message_text == threads[tid]["lastMessagePreview"]
        assert model.last_message_at_ms == threads[tid]["lastMessageAtMs"]
        shown = app.chat(store.client, tid)
        archived = [phone.message_at(chat, i) for i in phone.history_range(chat)]
        expected = [m.message_id for m in sorted(archived, key=lambda m: -m.ts_ms)][: app.CHAT_LIMIT]
        assert [m.doc_id for m in shown] == expected  # every stored message is shown, newest first
        assert all(m.body or m.media_type for m in shown)
        if chat.is_group:
            assert model.display_name == chat.name
            assert all(m.sender_name for m in shown if m.direction == "inbound")


async def test_live_conversations_of_every_kind_are_listed(firestore_store: FirestoreStore, tmp_path: Path) -> None:
    store = firestore_store
    phone = SimPhone(ACCOUNT, seed=23, chats=6, history_messages=60)
    pn_chat = phone.chats_of("pn")[0]
    async with running(settings_for(tmp_path), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        asked_after_history = list(phone.group_info_asked)
        new_group = phone.add_chat("group", "Petrecere sâmbătă")
        phone.emit_inbound(new_group, "cine vine?")
        stranger = phone.add_chat("lid")  # known only by LID, no push name
        phone.emit_inbound(stranger, "buna, ce pret are?")
        named_stranger = phone.add_chat("lid", "Bogdan")
        phone.emit_inbound(named_stranger, "salut")
        merged = phone.add_chat("lid", "Carmen")
        phone.emit_inbound(merged, "before we knew the number")
        unknown_group = "120363999999999999@g.us"  # WhatsApp refuses to describe it
        phone.emit_raw(P.raw(P.message_event(
            chat=unknown_group, sender=phone.chats_of("pn")[1].pn, message_id="3AUNKNOWNGROUP01",
            content=P.text("hello group"), ts_ms=1_800_000_000_000)))
        await settle(daemon, [phone])
        phone.reveal(merged)
        phone.emit_inbound(merged, "now with the number")
        photo = phone.emit_content(pn_chat, P.image(""))  # media without a caption
        outbound = phone.emit_outbound(pn_chat, "comanda e gata")
        phone.emit_receipt(pn_chat, [outbound], "delivered")
        phone.emit_receipt(pn_chat, [outbound], "read")
        revoked = phone.emit_inbound(pn_chat, "mesaj sters")
        phone.emit_revoke(pn_chat, revoked, from_me=False)
        await settle(daemon, [phone])
        renamed_before = inbox(store)[thread_id_for(ACCOUNT, new_group.jid)].display_name
        phone.rename_group(new_group, "Petrecere duminică")
        from wadaemon.outbound import send_text

        newcomer = "+40745000111"
        sent = await send_text(daemon.accounts[ACCOUNT].ctx, phone, newcomer, "bun venit")
        await settle(daemon, [phone])
    check_documents(store)
    shown = inbox(store)
    assert set(shown) == set(stored_threads(store))  # nothing stored is hidden

    group = shown[thread_id_for(ACCOUNT, new_group.jid)]
    assert asked_after_history == [] and phone.group_info_asked == [new_group.jid]
    assert renamed_before == "Petrecere sâmbătă" and group.display_name == "Petrecere duminică"
    assert app.chat(store.client, group.thread_id)[0].sender_name  # the participant's name

    lone = shown[thread_id_for(ACCOUNT, stranger.lid)]
    assert lone.display_name == placeholder_name(stranger.lid) and lone.phone is None
    assert lone.display_name.startswith("Contact ") and not app.looks_like_phone(lone.display_name)
    assert shown[thread_id_for(ACCOUNT, named_stranger.lid)].display_name == "Bogdan"
    assert shown[thread_id_for(ACCOUNT, unknown_group)].display_name == placeholder_name(unknown_group)

    assert thread_id_for(ACCOUNT, merged.lid) not in shown
    carmen = shown[thread_id_for(ACCOUNT, merged.pn)]
    assert (carmen.display_name, carmen.normalized_phone) == ("Carmen", "+" + merged.pn.split("@")[0])
    assert [m.body for m in app.chat(store.client, carmen.thread_id)] == [
        "now with the number", "before we knew the number"]

    pn = shown[thread_id_for(ACCOUNT, pn_chat.pn)]
    messages = {m.doc_id: m for m in app.chat(store.client, pn.thread_id)}
    assert revoked not in messages  # deleted for everyone: the chat shows nothing of it
    assert messages[photo].media_type == "image" and messages[photo].body == ""
    assert (messages[outbound].direction, messages[outbound].status) == ("outbound", "read")

    new_thread = shown[thread_id_for(ACCOUNT, "40745000111@s.whatsapp.net")]
    assert (new_thread.normalized_phone, new_thread.last_message_direction) == (newcomer, "outbound")
    assert [(m.doc_id, m.status) for m in app.chat(store.client, new_thread.thread_id)] == [
        (sent.message_id, "sent")]


async def test_the_inbox_finds_the_account_connected_and_lists_its_threads(
        firestore_store: FirestoreStore, tmp_path: Path) -> None:
    """The inbox takes its accounts from ``GET /api/whatsapp/accounts`` and lists the threads
    of the ``connected`` ones only."""
    store = firestore_store
    phone = SimPhone(ACCOUNT, seed=25, chats=5, history_messages=50)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings_for(tmp_path, HOST="127.0.0.1", PORT=str(port))
    async with running(settings, store, {ACCOUNT: phone}, serve=True) as daemon:
        await settle(daemon, [phone])
        reply = await trio.to_thread.run_sync(get_json, daemon.http.port, "/api/whatsapp/accounts")
    assert app.connected_accounts(reply) == [ACCOUNT]
    assert len(inbox(store)) == 5


def get_json(port: int, path: str) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        return json.loads(response.read())
    finally:
        connection.close()
