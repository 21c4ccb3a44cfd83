"""Backfill end to end on both stores: the real daemon (journal, dispatcher, on-demand step,
store) against the simulated phone, which answers on-demand requests from its archive."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from tests.http.test_metrics import metric
from tests.spine.harness import dump, running, settings_for, settle
from wadaemon.daemon import Daemon
from wadaemon.domain import AutoBackfillStatus, ThreadSummary, thread_id_for
from wadaemon.store.contract import Store
from wadaemon.whatsapp.simphone import SimPhone
from wadaemon.whatsapp.transport import Transport

ACCOUNT = "acct"
#: Seed 2 with 4 chats: group, LID-addressed, phone-number, LID (newest first).
SEED = 2
ENV = {
    "WHATSAPP_BACKFILL_COUNT": "100",
    "WHATSAPP_BACKFILL_THREADS": "3",
    "WHATSAPP_BACKFILL_MESSAGES_PER_THREAD": "50",
    "WHATSAPP_HISTORY_REQUEST_PACE_MS": "0",
}


def shallow_phone(**kw: Any) -> SimPhone:
    """20 of 150 messages per chat come with pairing; 130 older ones only on request."""
    return SimPhone(ACCOUNT, seed=SEED, chats=4, history_messages=80, archive_depth=130,
                    bootstrap_per_chat=10, recent_per_chat=10, **kw)


def thread_of(phone: SimPhone, index: int) -> str:
    chat = phone.chats[index]
    jid = chat.jid if chat.is_group or chat.alt_hidden else chat.pn
    return thread_id_for(ACCOUNT, jid)


async def backfill_now(daemon: Daemon) -> AutoBackfillStatus:
    done = trio.Event()
    got: list[AutoBackfillStatus] = []

    def finished(account_id: str, status: AutoBackfillStatus) -> None:
        got.append(status)
        done.set()

    daemon.auto_backfill.on_finished = finished
    assert await daemon.auto_backfill.trigger_backfill(ACCOUNT) == "started"
    with trio.fail_after(60):
        await done.wait()
    return got[0]


async def test_shallow_pairing_backfilled_to_count_then_exhausted(store: Store, tmp_path: Path) -> None:
    phone = shallow_phone()
    assert [c.kind for c in phone.chats[:3]] == ["group", "lid", "pn"]
    async with running(settings_for(tmp_path, **ENV), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])

        def count(name: str, **labels: str) -> float:
            return metric(daemon.metrics, f"wadaemon_{name}_total", account_id=ACCOUNT, **labels)

        first = await backfill_now(daemon)
        assert (first.ok, first.threads, first.messages, first.errors) == (True, 3, 300, 0)
        threads = dump(store, ACCOUNT)
        assert not any("@lid" in tid for tid in threads)  # LID-addressed answers reached the PN thread
        for index in range(3):
            _, messages = threads[thread_of(phone, index)]
            assert [m.id for m in messages] == [phone.message_id(index, i) for i in range(30, 150)]
            assert sum(m.sync_source == "backfill" for m in messages) == 100
            assert all(m.synced_at is not None for m in messages if m.sync_source == "backfill")
        assert len(threads[thread_of(phone, 3)][1]) == 20  # not a top thread: untouched
        assert count("history_requests_sent") == 6  # 2 requests of 50 per thread: the ideal
        assert count("history_requests_answered", timing="in_time") == 6
        assert count("backfill_runs", result="success") == 1

        second = await backfill_now(daemon)  # 30 left on the phone, then it says "no more"
        assert (second.ok, second.messages) == (True, 90)
        for index in range(3):
            thread, messages = dump(store, ACCOUNT)[thread_of(phone, index)]
            assert len(messages) == 150
            assert thread.backfill_exhausted_at is not None and thread.last_backfill_at is not None

        asked = count("history_requests_sent")
        third = await backfill_now(daemon)
        assert (third.ok, third.threads, third.messages) == (True, 0, 0)
        assert count("history_requests_sent") == asked  # exhausted threads are not asked again
        assert count("backfill_runs", result="success") == 3
        assert count("history_requests_timed_out") == count("history_requests_answered", timing="late") == 0
    account = store.get_account(ACCOUNT)
    assert account is not None and account.last_backfill_result is not None
    assert [r.skipped for r in account.last_backfill_result.thread_results] == ["exhausted"] * 3
    assert account.last_backfill_status == "success" and account.last_backfill_error == ""
    assert account.last_backfill_stats is not None and account.last_backfill_stats.threads == 0
    assert account.last_auto_backfill_status == third
    assert account.last_auto_backfill_success_at is not None and account.last_auto_backfill_attempt_at is not None


class Withholding:
    """The phone, but on-demand answers are held back until ``answer_now`` (a slow phone)."""

    def __init__(self, phone: SimPhone) -> None:
        self.phone = phone
        self.calls: list[tuple[str, int, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.phone, name)

    def request_history(self, chat_jid: str, oldest_id: str, oldest_from_me: bool, oldest_ts_ms: int,
                        count: int) -> None:
        self.calls.append((chat_jid, oldest_ts_ms, count))

    def answer_now(self) -> None:
        for chat_jid, ts_ms, count in self.calls:
            self.phone.emit_raw(self.phone.on_demand_answer(chat_jid, ts_ms, count))


async def test_answer_after_its_timeout_is_still_stored(store: Store, tmp_path: Path) -> None:
    phone = shallow_phone()
    slow = Withholding(phone)
    env = {**ENV, "WHATSAPP_BACKFILL_THREADS": "1", "WHATSAPP_HISTORY_REQUEST_TIMEOUT_MS": "200"}
    async with running(settings_for(tmp_path, **env), store, {ACCOUNT: cast(Transport, slow)}) as daemon:
        await settle(daemon, [phone])
        status = await backfill_now(daemon)
        assert (status.ok, status.threads, status.messages, status.errors) == (True, 1, 0, 1)
        account = store.get_account(ACCOUNT)
        assert account is not None and account.last_backfill_result is not None
        assert account.last_backfill_result.thread_results[0].error == "timeout"
        slow.answer_now()
        await settle(daemon, [phone])
        late = {timing: metric(daemon.metrics, "wadaemon_history_requests_answered_total",
                               account_id=ACCOUNT, timing=timing) for timing in ("in_time", "late")}
        assert late == {"in_time": 0, "late": 1}
        assert metric(daemon.metrics, "wadaemon_history_requests_timed_out_total", account_id=ACCOUNT) == 1
    _, messages = dump(store, ACCOUNT)[thread_of(phone, 0)]
    assert len(messages) == 70 and sum(m.sync_source == "backfill" for m in messages) == 50


async def test_dry_run_counts_and_writes_no_message(store: Store, tmp_path: Path) -> None:
    phone = shallow_phone()
    async with running(settings_for(tmp_path, **ENV), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
    before = {tid: len(messages) for tid, (_, messages) in dump(store, ACCOUNT).items()}
    again = shallow_phone(paired=True)
    env = {**ENV, "WHATSAPP_HISTORY_SYNC_DRY_RUN": "true"}
    async with running(settings_for(tmp_path, **env), store, {ACCOUNT: again}) as daemon:
        await settle(daemon, [again])
        status = await backfill_now(daemon)
    assert (status.ok, status.threads, status.messages) == (True, 3, 300)
    assert {tid: len(messages) for tid, (_, messages) in dump(store, ACCOUNT).items()} == before
    thread = store.get_thread(thread_of(again, 0))
    assert thread is not None and thread.last_backfill_at is None


async def test_capability_unavailable_said_once_and_repair_still_runs(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    phone = shallow_phone(history_requests=False)
    caplog.set_level(logging.INFO)
    async with running(settings_for(tmp_path, **ENV), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        assert await daemon.auto_backfill.trigger_backfill(ACCOUNT) == "unavailable"
        account = store.get_account(ACCOUNT)
        assert account is not None and account.last_auto_backfill_status is not None
        said = account.last_auto_backfill_status
        assert (said.ok, said.running, said.error_code) == (False, False, "history_requests_unavailable")
        # A thread whose summary names a time no stored message has (the original backend
        # stamped "now" on history chunks): repair puts it back on its newest stored message.
        broken = thread_of(phone, 0)
        newest = dump(store, ACCOUNT)[broken][1][-1]
        store.advance_threads([ThreadSummary(account_id=ACCOUNT, client_jid=phone.chats[0].jid,
                                             last_message_ms=newest.ts_client_ms + 86_400_000,
                                             last_message_preview="stamped now")])
        await daemon.auto_backfill.tick()
        await daemon.auto_backfill.tick()
        assert daemon.board.account(ACCOUNT).backfill_blocked == "capability_unavailable"
    thread = store.get_thread(broken)
    assert thread is not None
    assert (thread.last_message_at_ms, thread.last_message_preview) == (newest.ts_client_ms, newest.body[:100] or f"[{newest.message_type}]")
    account = store.get_account(ACCOUNT)
    assert account is not None and account.last_auto_repair_at is not None
    assert account.last_auto_backfill_status == said  # said once, no failure per tick
    guard = [r.getMessage() for r in caplog.records if "[schema-guard]" in r.getMessage() and "problem=" in r.getMessage()]
    assert len(guard) == 1 and "summary_time_not_stored" in guard[0]
    assert sum("history_requests_unavailable" in r.getMessage() for r in caplog.records
               if r.name == "wadaemon.auto_backfill") == 1
