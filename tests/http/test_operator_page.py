"""``GET /`` rendering: from memory when the store is down, everything escaped, backfill state
in words for each shape of ``lastAutoBackfillStatus``."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

import pytest

from tests.http.conftest import NOW_S, Serve
from tests.http.fakes import FakeStore, fetch
from wadaemon.config import Settings
from wadaemon.domain import (
    AccountDoc,
    AutoBackfillStatus,
    InstanceDoc,
    RecentSyncResult,
    SyncGap,
    ThreadDoc,
)
from wadaemon.http.operator_page import backfill_words, recent_sync_words
from wadaemon.status import AccountStatus, ClusterView, DaemonStatus

EVIL = "<script>alert('x')</script>&\"quoted\""


def at(seconds_before_now: float) -> datetime:
    return datetime.fromtimestamp(NOW_S - seconds_before_now, UTC)


class ThreadStore(FakeStore):
    def __init__(self, threads: dict[str, list[ThreadDoc]], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.threads = threads

    def list_threads(self, account_id: str, *, limit: int) -> list[ThreadDoc]:
        self._record(f"list_threads:{account_id}", self.hang_reads)
        return self.threads.get(account_id, [])[:limit]


def board_with(board: DaemonStatus, account: str = "shop-a") -> AccountStatus:
    board.set_mode("active")
    status = board.account(account)
    status.state = "connected"
    status.history.progress = 42
    status.journal_backlog = 3
    status.journal_oldest_pending_ms = int((NOW_S - 5) * 1000)
    status.last_realtime_ingest_ms = int((NOW_S - 2) * 1000)
    status.last_error = EVIL
    status.open_gaps = [SyncGap(from_ms=int((NOW_S - 600) * 1000), to_ms=int((NOW_S - 480) * 1000),
                                reason=EVIL)]
    status.backfill_blocked = "cooldown"
    status.backfill_next_eligible_ms = int((NOW_S + 120) * 1000)
    return status


def test_page_renders_from_memory_when_the_store_is_down(serve: Serve, board: DaemonStatus,
                                                        fake_store: FakeStore) -> None:
    board_with(board)
    fake_store.ping_result = False
    reply = fetch(serve(clock=lambda: NOW_S).port, "/")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/html")
    page = reply.raw.decode()
    assert 'id=store-down' in page and "unreachable" in page
    assert "data-account='shop-a'" in page
    assert "aria-valuenow=42" in page
    assert "3</span> entries to commit" in page
    assert "Recent threads: store unreachable" in page
    assert not any(call.startswith(("get_account", "list_threads")) for call in fake_store.calls)


def test_instance_list_renders_from_memory_when_the_store_is_down(serve: Serve, board: DaemonStatus,
                                                                  fake_store: FakeStore) -> None:
    board_with(board)
    now_ms = int(NOW_S * 1000)
    board.set_cluster(ClusterView(at_ms=now_ms - 20_000, leases=[], instances=[
        InstanceDoc(instance_id="inst-1", heartbeat_at_ms=now_ms - 20_000, started_at_ms=now_ms - 3_600_000,
                    version="0.1.0", accounts=["shop-a"]),
        InstanceDoc(instance_id=EVIL, heartbeat_at_ms=now_ms - 600_000, started_at_ms=now_ms - 7_200_000,
                    version="0.0.9", accounts=[f"acct-{i}" for i in range(12)], accepting=False)]))
    fake_store.ping_result = False
    page = fetch(serve(clock=lambda: NOW_S).port, "/").raw.decode()
    assert "id=store-down" in page
    section = page[page.index("<section id=instances>"):]
    assert "2 sharing the store, as read 2024-01-02 03:03:45Z (20s ago)" in section
    rows = re.findall(r"<tr data-instance='([^']*)'>(.*?)</tr>", section)
    assert [html.unescape(instance) for instance, _ in rows] == ["inst-1", EVIL]
    mine, other = (row for _, row in rows)
    assert "this instance" in mine and "20s ago" in mine and "<td>1<br>" in mine and "0.1.0" in mine
    assert "this instance" not in other and "stopping" in other
    assert "10min ago (stale)" in other and "<td>12<br>" in other and "… 2 more" in other
    assert "<script>alert" not in page


def test_instance_list_before_the_first_heartbeat_read(serve: Serve, board: DaemonStatus) -> None:
    board_with(board)
    page = fetch(serve(clock=lambda: NOW_S).port, "/").raw.decode()
    assert "No heartbeat read yet." in page


def test_everything_from_whatsapp_is_escaped(serve: Serve, board: DaemonStatus) -> None:
    board_with(board)
    thread = ThreadDoc(account_id="shop-a", client_jid="4071@s.whatsapp.net", display_name=EVIL,
                       last_message_at=at(60), last_message_at_ms=int((NOW_S - 60) * 1000),
                       last_message_preview="secret message text")
    store = ThreadStore({"shop-a": [thread]}, accounts={"shop-a": AccountDoc(owner_instance=EVIL)})
    reply = fetch(serve(store=store, clock=lambda: NOW_S).port, "/")
    page = reply.raw.decode()
    assert "<script>alert" not in page
    assert page.count(html.escape(EVIL, quote=True)) == 4  # owner, thread name, last error, gap
    assert "1 open</span>" in page
    assert "scheduler: cooldown until 2024-01-02 03:06:05Z (in 2min)" in page
    assert "secret message text" not in page  # no message text on the ops page
    assert "2024-01-02 03:03:05Z (60s ago)" in page
    # The only script is the page's own, allowed by its hash.
    assert len(re.findall("<script>", page)) == 1
    assert "script-src 'sha256-" in reply.headers["Content-Security-Policy"]


def test_many_accounts_leave_threads_out_unless_one_is_picked(serve: Serve, board: DaemonStatus) -> None:
    for n in range(12):
        board_with(board, f"acct-{n:02d}")
    store = ThreadStore({}, accounts={})
    server = serve(store=store, clock=lambda: NOW_S)
    page = fetch(server.port, "/").raw.decode()
    assert page.count("<section class=account") == 12
    assert not any(call.startswith("list_threads") for call in store.calls)
    assert "href='/?account=acct-03'" in page
    focused = fetch(server.port, "/?account=acct-03").raw.decode()
    assert focused.count("<section class=account") == 1
    assert "list_threads:acct-03" in store.calls


SETTINGS = Settings(instance_id="i", auto_backfill_cooldown_ms=3_600_000,
                    auto_backfill_attempt_backoff_ms=600_000)


@pytest.mark.parametrize(("doc", "css", "words"), [
    (AccountDoc(), "muted", "never run"),
    (AccountDoc(last_auto_backfill_status=AutoBackfillStatus(
        running=True, started_at=at(30), trigger="connect", holder="inst-2"),
        auto_backfill_lease_until=at(-600)),
     "ok", "running since 2024-01-02 03:03:35Z (30s ago) on inst-2 (connect)"),
    (AccountDoc(last_auto_backfill_status=AutoBackfillStatus(running=True, started_at=at(7200), holder="dead"),
                auto_backfill_lease_until=at(3600)),
     "warn", "stale: a run on dead started"),
    (AccountDoc(last_auto_backfill_status=AutoBackfillStatus(running=False, ok=True, threads=4, messages=80),
                last_auto_backfill_success_at=at(600)),
     "ok", "cooling down until 2024-01-02 03:54:05Z (in 50min); last run gained 80 messages in 4 threads"),
    (AccountDoc(last_auto_backfill_status=AutoBackfillStatus(running=False, ok=True),
                last_auto_backfill_success_at=at(7200)),
     "ok", "idle, eligible at the next tick"),
    (AccountDoc(last_auto_backfill_status=AutoBackfillStatus(
        running=False, ok=False, error_code="store_unavailable", error_message="deadline exceeded"),
        last_auto_backfill_attempt_at=at(60)),
     "bad", "blocked: store_unavailable: deadline exceeded; retried after 2024-01-02 03:13:05Z (in 9min)"),
    (AccountDoc(last_auto_backfill_status=AutoBackfillStatus(
        running=False, ok=False, error_code="history_requests_unavailable", error_message="neonize 0.5.2")),
     "warn", "unavailable: neonize 0.5.2"),
])
def test_backfill_state_in_words(doc: AccountDoc, css: str, words: str) -> None:
    got_css, got_words = backfill_words(doc, AccountStatus(account_id="a"), SETTINGS, NOW_S)
    assert got_css == css
    assert got_words.startswith(words), got_words


def test_backfill_unavailable_transport_and_recent_sync_words() -> None:
    status = AccountStatus(account_id="a", history_request_capability="unavailable")
    assert backfill_words(AccountDoc(), status, SETTINGS, NOW_S)[1].startswith("unavailable: this WhatsApp client")
    doc = AccountDoc(last_recent_sync_at=at(90), last_recent_sync_result=RecentSyncResult(
        ok=True, threads=3, messages=12))
    assert recent_sync_words(doc, SETTINGS, NOW_S) == \
        "ok 2024-01-02 03:02:35Z (1min ago): 3 threads, 12 messages, 0 errors"
    assert recent_sync_words(doc, Settings(instance_id="i", recent_sync_enabled=False), NOW_S).startswith("disabled")
