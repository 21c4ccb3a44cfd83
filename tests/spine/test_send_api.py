"""Sends through the daemon's control (what ``POST /api/whatsapp/send`` calls), on the real
daemon and simulated phones: idempotency across a restart, and a slow WhatsApp answer that is
honoured instead of being recorded ``failed`` (issue: a timed-out send lied)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio

from tests.spine.harness import running, settings_for, settle
from wadaemon.domain import thread_id_for
from wadaemon.http.control import ClientMessageIdReused, NotConnected
from wadaemon.store.contract import Store
from wadaemon.whatsapp.simphone import SimPhone
from wadaemon.whatsapp.transport import SendResult

ACCOUNT = "acc-send"


class SlowPhone(SimPhone):
    """A phone whose WhatsApp acknowledges a send only once ``release`` is set."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.release = threading.Event()
        self.entered = threading.Event()

    def send_text(self, to_jid: str, text: str) -> SendResult:
        self.entered.set()
        assert self.release.wait(30), "the test never released the send"
        return super().send_text(to_jid, text)


async def test_same_client_message_id_sends_once_also_after_a_restart(store: Store, tmp_path: Path) -> None:
    phone = SimPhone(ACCOUNT, seed=21, chats=3, history_messages=0)
    to = "+" + phone.chats_of("pn")[0].pn.split("@")[0]
    settings = settings_for(tmp_path)
    async with running(settings, store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        first = await daemon.control._send(ACCOUNT, to, "only once", "cm-1")
        again = await daemon.control._send(ACCOUNT, to, "only once", "cm-1")
        with pytest.raises(ClientMessageIdReused):
            await daemon.control._send(ACCOUNT, to, "something else", "cm-1")
    async with running(settings, store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        after_restart = await daemon.control._send(ACCOUNT, to, "only once", "cm-1")
    assert first.status == "sent" and first.message_id == phone.sent[0].message_id
    assert again == first == after_restart
    assert len(phone.sent) == 1


async def test_a_send_answered_after_the_wait_becomes_sent_not_failed(store: Store, tmp_path: Path) -> None:
    phone = SlowPhone(ACCOUNT, seed=22, chats=3, history_messages=0)
    chat = phone.chats_of("pn")[0]
    async with running(settings_for(tmp_path), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        daemon.control.send_wait_s = 0.05  # the HTTP request gives up waiting long before WhatsApp answers
        answer = await daemon.control._send(ACCOUNT, chat.pn, "slow network", "cm-slow")
        assert phone.entered.is_set() and not phone.release.is_set()
        tid = thread_id_for(ACCOUNT, chat.pn)
        pending = store.get_message(tid, answer.message_id)
        assert answer.status == "queued" and pending is not None and pending.status == "queued"
        retry = await daemon.control._send(ACCOUNT, chat.pn, "slow network", "cm-slow")
        assert retry == answer  # still in progress: the same answer, no second send
        phone.release.set()
        with trio.fail_after(30):
            await daemon.control.wait_settled()
        settled = await daemon.control._send(ACCOUNT, chat.pn, "slow network", "cm-slow")
        await settle(daemon, [phone])
    assert len(phone.sent) == 1
    wa_id = phone.sent[0].message_id
    assert settled.status == "sent" and settled.message_id == wa_id
    stored = {m.id: m for m in store.list_messages(tid, limit=10)}
    assert set(stored) == {wa_id}  # re-keyed under WhatsApp's id, the queued copy gone
    assert stored[wa_id].status in ("sent", "delivered", "read")


async def test_a_send_while_disconnected_is_refused_and_nothing_is_queued(store: Store, tmp_path: Path) -> None:
    phone = SimPhone(ACCOUNT, seed=23, chats=3, history_messages=0)
    chat = phone.chats_of("pn")[0]
    async with running(settings_for(tmp_path), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        daemon.accounts[ACCOUNT].ctx.status.state = "disconnected"
        with pytest.raises(NotConnected):
            await daemon.control._send(ACCOUNT, chat.pn, "not now", "cm-off")
        daemon.accounts[ACCOUNT].ctx.status.state = "connected"
        later = await daemon.control._send(ACCOUNT, chat.pn, "not now", "cm-off")
    assert later.status == "sent" and len(phone.sent) == 1
