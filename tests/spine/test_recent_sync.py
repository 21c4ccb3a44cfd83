"""Recent-sync end to end on both stores: the real daemon restarted over the same store and
the same simulated phone, whose offline queue lost part of what was sent meanwhile."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from tests.http.test_metrics import metric
from tests.spine.harness import dump, running, settings_for, settle
from wadaemon.store.contract import Store
from wadaemon.whatsapp.simphone import SimPhone

ACCOUNT = "acct"
ENV = {"WHATSAPP_HISTORY_REQUEST_PACE_MS": "0", "RECENT_SYNC_MAX_MESSAGES_PER_THREAD": "100"}


def phone_ids(phone: SimPhone) -> set[str]:
    archived = {phone.message_id(chat, i) for chat in phone.chats for i in phone.history_range(chat)}
    return archived | {m.message_id for kept in phone.live_messages.values() for m in kept}


async def test_restart_gap_with_a_dropped_offline_queue_is_filled(store: Store, tmp_path: Path) -> None:
    phone = SimPhone(ACCOUNT, seed=2, chats=4, history_messages=40, archive_depth=0, wall_clock=True)
    settings = settings_for(tmp_path, **ENV)
    async with running(settings, store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        for n in range(8):
            phone.emit_inbound(n % 4, f"before {n}")
        await settle(daemon, [phone])
    # Down: the phone keeps sending; the service loses the first part of its offline queue.
    lost = {phone.emit_inbound(n % 4, f"lost {n}") for n in range(8)}
    assert phone.drop_held() == 8
    queued = {phone.emit_outbound(n % 4, f"queued {n}") for n in range(4)}
    ahead_ms = 0  # the second daemon's wall clock runs this far ahead of the real one
    async with running(settings, store, {ACCOUNT: phone},
                       clock=lambda: int(time.time() * 1000) + ahead_ms) as daemon:
        await settle(daemon, [phone])

        def count(name: str) -> float:
            return metric(daemon.metrics, f"wadaemon_{name}", account_id=ACCOUNT)

        assert (count("sync_gaps_opened_total"), count("sync_gaps_open")) == (1, 1)
        for n in range(4):  # every chat active after the gap
            phone.emit_inbound(n, f"after {n}")
        await settle(daemon, [phone])
        account = daemon.accounts[ACCOUNT]
        gaps = account.open_gaps()
        assert [g.reason for g in gaps] == ["restart"]
        stored = {m.id for _, messages in dump(store, ACCOUNT).values() for m in messages}
        assert queued <= stored and not lost & stored  # the queue delivered what it still had
        await daemon.recent_sync.tick()
        await settle(daemon, [phone])
        asked = count("history_requests_sent_total")
        assert asked == 4  # one per chat: each answer reached back before the gap
        await daemon.recent_sync.tick()
        assert count("history_requests_sent_total") == asked  # checked through the gap: no request again
        assert count("sync_gaps_closed_total") == 0
        # Hours later the gap leaves the look-back window: closed, counted, durably.
        ahead_ms = settings.recent_sync_lookback_ms + 60_000
        await daemon.recent_sync.tick()
        assert account.open_gaps() == []
        assert (count("sync_gaps_opened_total"), count("sync_gaps_closed_total"), count("sync_gaps_open")) == (1, 1, 0)
    threads = dump(store, ACCOUNT)
    ids = Counter(m.id for _, messages in threads.values() for m in messages)
    assert set(ids) == phone_ids(phone) and max(ids.values()) == 1  # everything, exactly once
    sources = {m.id: m.sync_source for _, messages in threads.values() for m in messages}
    assert {sources[i] for i in lost} == {"recent_sync"}
    doc = store.get_account(ACCOUNT)
    assert doc is not None and doc.last_recent_sync_result is not None
    result = doc.last_recent_sync_result
    assert (result.ok, result.threads, result.messages, result.requests) == (True, 0, 0, 0)  # the second tick
    assert not doc.sync_gaps and doc.covered_until is not None
