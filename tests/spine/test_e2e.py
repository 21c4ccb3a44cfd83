"""The ingest spine end to end, on both stores: a WhatsApp event, once handed over, ends up in
the store exactly once, under the right thread, whatever fails in between."""

from __future__ import annotations

from pathlib import Path

from tests.spine.harness import dump, running, settings_for, settle
from wadaemon.domain import thread_id_for
from wadaemon.store.contract import Store
from wadaemon.whatsapp import protos as P
from wadaemon.whatsapp.simphone import SimPhone

ACCOUNT = "acct"


def expected_thread_jid(phone: SimPhone, index: int) -> str:
    chat = phone.chats[index]
    if chat.is_group:
        return chat.jid
    return chat.jid if chat.alt_hidden else chat.pn


async def test_pairing_history_arrives_complete_with_correct_summaries(store: Store, tmp_path: Path) -> None:
    phone = SimPhone(ACCOUNT, seed=3, chats=30, history_messages=2400, chunk_size=300)
    async with running(settings_for(tmp_path), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        status = daemon.board.account(ACCOUNT)
    threads = dump(store, ACCOUNT)
    assert len(threads) == 30
    assert sum(len(messages) for _, messages in threads.values()) == 2400
    for index, chat in enumerate(phone.chats):
        tid = thread_id_for(ACCOUNT, expected_thread_jid(phone, index))
        thread, messages = threads[tid]
        assert len(messages) == chat.history
        newest = messages[-1]
        assert thread.last_message_at_ms == newest.ts_client_ms
        assert thread.last_message_preview == (newest.body[:100] or f"[{newest.message_type}]")
        assert thread.is_group == chat.is_group
        assert all(m.sync_source == "history_sync" for m in messages)
        assert "@lid" not in tid or chat.alt_hidden
        assert ":" not in thread.client_jid
    account = store.get_account(ACCOUNT)
    assert account is not None and account.last_history_sync_result is not None
    assert account.last_history_sync_result.saved == 2400
    assert account.state == "connected"
    assert status.history.progress == 100


async def test_live_messages_receipts_and_mutations(store: Store, tmp_path: Path) -> None:
    phone = SimPhone(ACCOUNT, seed=5, chats=6, history_messages=60)
    pn_chat = phone.chats_of("pn")[0]
    async with running(settings_for(tmp_path), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        inbound = phone.emit_inbound(pn_chat, "hello there")
        outbound = phone.emit_outbound(pn_chat, "hi from the phone")
        phone.emit_receipt(pn_chat, [outbound], "read")
        phone.emit_receipt(pn_chat, [outbound], "delivered")  # late: must not move status back
        phone.emit_edit(pn_chat, outbound, "hi, edited")
        phone.emit_reaction(pn_chat, outbound, "👍")
        revoked = phone.emit_outbound(pn_chat, "oops")
        phone.emit_revoke(pn_chat, revoked)
        await settle(daemon, [phone])
    tid = thread_id_for(ACCOUNT, pn_chat.pn)
    got_in = store.get_message(tid, inbound)
    got_out = store.get_message(tid, outbound)
    got_revoked = store.get_message(tid, revoked)
    assert got_in is not None and got_in.direction == "inbound" and got_in.body == "hello there"
    assert got_out is not None and got_out.direction == "outbound"
    assert got_out.status == "read" and got_out.read_at is not None
    assert got_out.edited_body == "hi, edited" and got_out.body == "hi from the phone"
    assert got_out.reactions is not None and list(got_out.reactions.values()) == ["👍"]
    assert got_revoked is not None and got_revoked.deleted and got_revoked.body == ""
    thread = store.get_thread(tid)
    assert thread is not None and thread.last_message_at_ms == got_revoked.ts_client_ms


async def test_a_receipt_before_its_message_is_applied_when_it_lands(store: Store, tmp_path: Path) -> None:
    phone = SimPhone(ACCOUNT, seed=7, chats=4, history_messages=0)
    chat = phone.chats_of("pn")[0]
    async with running(settings_for(tmp_path), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        future_id = "3EB0FUTURE00000001"
        phone.emit_receipt(chat, [future_id], "read")
        await settle(daemon, [phone])
        assert daemon.board.account(ACCOUNT).pending_receipts == 1
        phone.emit_raw(P.raw(P.message_event(
            chat=chat.jid, sender=phone.own.pn, message_id=future_id, content=P.text("late echo"),
            ts_ms=1_800_000_000_000, from_me=True, is_group=False, recipient_alt=chat.pn if chat.pn != chat.jid else "")))
        await settle(daemon, [phone])
        assert daemon.board.account(ACCOUNT).pending_receipts == 0
    message = store.get_message(thread_id_for(ACCOUNT, chat.pn), future_id)
    assert message is not None and message.status == "read"


async def test_a_lid_thread_merges_into_the_phone_number_thread(store: Store, tmp_path: Path) -> None:
    phone = SimPhone(ACCOUNT, seed=11, chats=16, history_messages=0, lid_ratio=1.0, group_ratio=0.0)
    hidden = next(chat for chat in phone.chats if chat.alt_hidden)
    async with running(settings_for(tmp_path), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        first = phone.emit_inbound(hidden, "before we knew the number")
        await settle(daemon, [phone])
        assert store.get_thread(thread_id_for(ACCOUNT, hidden.lid)) is not None
        phone.reveal(hidden)
        second = phone.emit_inbound(hidden, "now with the number")
        await settle(daemon, [phone])
    assert store.get_thread(thread_id_for(ACCOUNT, hidden.lid)) is None
    pn_tid = thread_id_for(ACCOUNT, hidden.pn)
    thread = store.get_thread(pn_tid)
    assert thread is not None and hidden.lid in thread.alias_jids
    ids = {m.id for m in store.list_messages(pn_tid, limit=100)}
    assert {first, second} <= ids


async def test_outbound_is_queued_then_settled_under_whatsapps_id(store: Store, tmp_path: Path) -> None:
    from wadaemon.outbound import send_text

    phone = SimPhone(ACCOUNT, seed=13, chats=4, history_messages=0)
    chat = phone.chats_of("pn")[0]
    async with running(settings_for(tmp_path), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        runtime = daemon.accounts[ACCOUNT]
        ok = await send_text(runtime.ctx, phone, "+" + chat.pn.split("@")[0], "hello from the API")
        phone.fail_sends("server said no")
        failed = await send_text(runtime.ctx, phone, chat.pn, "this one fails")
        await settle(daemon, [phone])
    tid = thread_id_for(ACCOUNT, chat.pn)
    messages = {m.id: m for m in store.list_messages(tid, limit=10)}
    assert ok.status == "sent" and ok.message_id == phone.sent[0].message_id
    sent = messages[ok.message_id]
    assert sent.sync_source == "outbound" and sent.body == "hello from the API"
    assert sent.status == "read"  # the phone's delivered + read receipts reached the re-keyed document
    assert failed.status == "failed" and messages[failed.message_id].status == "failed"
    assert not any(m.id.startswith("local-") and m.status == "queued" for m in messages.values())
    assert len(messages) == 2


async def test_dry_run_counts_and_writes_nothing(tmp_path: Path) -> None:
    from wadaemon.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "dry.sqlite")
    phone = SimPhone(ACCOUNT, seed=2, chats=5, history_messages=200)
    settings = settings_for(tmp_path, WHATSAPP_HISTORY_SYNC_DRY_RUN="true")
    async with running(settings, store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        progress = daemon.board.account(ACCOUNT).history
    assert progress.saved == 200 and progress.progress == 100
    assert store.list_threads(ACCOUNT, limit=10) == []
    account = store.get_account(ACCOUNT)
    assert account is not None and account.last_history_sync_result is not None
    assert account.last_history_sync_result.dry_run is True
    store.close()


async def test_capture_dir_records_every_raw_event_replayably(tmp_path: Path) -> None:
    from wadaemon.store.sqlite import SqliteStore
    from wadaemon.whatsapp.capture import decode_capture_line

    store = SqliteStore(tmp_path / "cap.sqlite")
    phone = SimPhone(ACCOUNT, seed=2, chats=5, history_messages=120, chunk_size=50)
    settings = settings_for(tmp_path, WADAEMON_CAPTURE_DIR=str(tmp_path / "capture"))
    async with running(settings, store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        phone.emit_inbound(None, "captured too")
        await settle(daemon, [phone])
    lines = (tmp_path / "capture" / f"{ACCOUNT}.jsonl").read_text().splitlines()
    names = [decode_capture_line(line).name for line in lines]
    assert names.count("HistorySync") == len(list(phone.pairing_history()))
    assert names.count("Message") == 1 and "Connected" in names
    store.close()


async def test_a_lid_thread_from_before_a_restart_still_merges(store: Store, tmp_path: Path) -> None:
    phone = SimPhone(ACCOUNT, seed=11, chats=16, history_messages=0, lid_ratio=1.0, group_ratio=0.0)
    hidden = next(chat for chat in phone.chats if chat.alt_hidden)
    async with running(settings_for(tmp_path), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        phone.emit_inbound(hidden, "before the restart")
        await settle(daemon, [phone])
    phone.reveal(hidden)
    restarted = SimPhone(ACCOUNT, seed=11, chats=16, history_messages=0, lid_ratio=1.0, group_ratio=0.0, paired=True)
    restarted.reveal(hidden)
    async with running(settings_for(tmp_path), store, {ACCOUNT: restarted}) as daemon:
        await settle(daemon, [restarted])
        other = next(chat for chat in restarted.chats if chat is not hidden)
        restarted.emit_inbound(other, "shifts the phone's live-id counter past the first run's")
        restarted.emit_inbound(hidden, "after the restart, with the number")
        await settle(daemon, [restarted])
    assert store.get_thread(thread_id_for(ACCOUNT, hidden.lid)) is None
    assert len(store.list_messages(thread_id_for(ACCOUNT, hidden.pn), limit=10)) == 2
