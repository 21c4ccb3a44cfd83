"""The store contract (``wadaemon.store.contract`` docstring, SPEC §1), once, for every backend.

Each test names the rule it pins. The ``store`` fixture (``conftest.py``) runs every test on the
embedded SQLite store and on Firestore (emulator), so the two adapters cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from msgspec.structs import replace

from tests.store.builders import (
    ACCOUNT,
    GROUP,
    PEER,
    PEER_LID,
    T0,
    edit,
    message,
    queued,
    reaction,
    receipt,
    revoke,
    summary,
    tid,
)
from wadaemon.domain import (
    AccountDoc,
    AutoBackfillStatus,
    BackfillResult,
    BackfillThreadResult,
    HistorySyncResult,
    InstanceDoc,
    Lease,
    MessageDoc,
    SyncGap,
    ThreadDoc,
    ThreadPatch,
    ms_to_datetime,
    thread_id_for,
)
from wadaemon.store.contract import LeaseKind, MessageOrder, PageKey, Store
from wadaemon.store.merge import placeholder_name

OTHER = "40722222222@s.whatsapp.net"
REACTOR_A = "40733333333@s.whatsapp.net"
REACTOR_B = "40744444444@s.whatsapp.net"
OTHER_LID = "987654321000@lid"


def stored(store: Store, doc: MessageDoc) -> MessageDoc:
    """The stored version of ``doc`` (which must exist)."""
    found = store.get_message(doc.thread_id, doc.id)
    assert found is not None, f"message {doc.id} not stored"
    return found


# ---------------------------------------------------------------------------------------------
# messages: idempotent by id
# ---------------------------------------------------------------------------------------------


def test_backend_is_named(store: Store) -> None:
    assert store.backend in ("sqlite", "firestore")


def test_upsert_round_trips_every_field_and_stamps_first_write(store: Store) -> None:
    """What is written is what a reader gets back, plus the store's createdAt/tsServer/updatedAt."""
    doc = message(
        "m1", body="see photo", message_type="image", media_type="image", media_url="https://mmg/x",
        media_mimetype="image/jpeg", media_filename="x.jpg", quoted_message_id="m0",
        reactions={REACTOR_A: "👍"}, source="history_sync", synced_ms=T0 + 5,
    )
    result = store.upsert_messages([doc])
    assert (result.written, result.unchanged) == (1, 0)
    got = stored(store, doc)
    assert got.created_at is not None and got.ts_server is not None and got.updated_at is not None
    assert got == replace(doc, created_at=got.created_at, ts_server=got.ts_server, updated_at=got.updated_at)


def test_upsert_keeps_created_at_and_ts_server_given_by_the_caller(store: Store) -> None:
    """Only fields left None are stamped (a message moved between threads keeps its first-seen time)."""
    doc = message("m1", created_at=ms_to_datetime(T0 - 5), ts_server=ms_to_datetime(T0 - 4))
    store.upsert_messages([doc])
    got = stored(store, doc)
    assert (got.created_at, got.ts_server) == (ms_to_datetime(T0 - 5), ms_to_datetime(T0 - 4))


def test_replay_writes_nothing(store: Store) -> None:
    docs = [message(f"m{i}", ts_ms=T0 + i) for i in range(3)]
    store.upsert_messages(docs)
    first = [stored(store, d) for d in docs]
    again = store.upsert_messages(docs)
    assert (again.written, again.unchanged, again.commits) == (0, 3, 0)
    assert [stored(store, d) for d in docs] == first  # not even updatedAt moved


def test_first_write_owns_created_at_ts_server_and_provenance(store: Store) -> None:
    """A later, richer write fills what the first lacked but never rewrites first-seen time or
    the first source (history sync stays history sync when realtime sees it again)."""
    first_doc = message("m1", body="", source="history_sync", synced_ms=T0 + 1)
    store.upsert_messages([first_doc])
    first = stored(store, first_doc)
    later = message(
        "m1", body="now with text", source="realtime", media_type="image", media_url="https://mmg/y",
        created_at=ms_to_datetime(T0), ts_server=ms_to_datetime(T0), synced_at=ms_to_datetime(T0 + 9),
    )
    assert store.upsert_messages([later]).written == 1
    got = stored(store, first_doc)
    assert (got.body, got.media_type, got.media_url) == ("now with text", "image", "https://mmg/y")
    assert got.created_at == first.created_at
    assert got.ts_server == first.ts_server
    assert got.sync_source == "history_sync"
    assert got.synced_at == ms_to_datetime(T0 + 1)
    assert got.updated_at is not None and first.updated_at is not None and got.updated_at >= first.updated_at


def test_same_message_twice_in_one_call_is_one_document(store: Store) -> None:
    doc = message("m1")
    result = store.upsert_messages([doc, doc])
    assert (result.written, result.unchanged) == (1, 1)
    assert len(store.list_messages(doc.thread_id, limit=10)) == 1


def test_large_batch_is_split_into_commits_of_at_most_500_writes(store: Store) -> None:
    n = 1200
    docs = [message(f"bulk-{i:05d}", ts_ms=T0 + i) for i in range(n)]
    result = store.upsert_messages(docs)
    assert (result.written, result.unchanged) == (n, 0)
    assert result.commits == math.ceil(n / 500)
    assert len(store.list_messages(tid(), limit=n + 10)) == n


# ---------------------------------------------------------------------------------------------
# status: forward only (queued < sent < delivered < read < played)
# ---------------------------------------------------------------------------------------------


def test_upsert_never_moves_status_back(store: Store) -> None:
    store.upsert_messages([message("o1", direction="outbound", status="read")])
    stale = message("o1", direction="outbound", status="sent")
    assert store.upsert_messages([stale]).unchanged == 1
    assert stored(store, stale).status == "read"
    assert store.upsert_messages([message("o1", direction="outbound", status="played")]).written == 1
    assert stored(store, stale).status == "played"


def test_receipts_move_status_forward_and_record_first_times(store: Store) -> None:
    doc = message("o1", direction="outbound", status="sent")
    store.upsert_messages([doc])

    assert store.apply_receipts([receipt("o1", "delivered", T0 + 100)]) == []
    got = stored(store, doc)
    assert (got.status, got.delivered_at, got.read_at) == ("delivered", ms_to_datetime(T0 + 100), None)

    store.apply_receipts([receipt("o1", "read", T0 + 200)])
    read = stored(store, doc)
    assert (read.status, read.delivered_at, read.read_at) == (
        "read", ms_to_datetime(T0 + 100), ms_to_datetime(T0 + 200))

    # A late "delivered" after "read" changes nothing at all.
    store.apply_receipts([receipt("o1", "delivered", T0 + 300)])
    assert stored(store, doc) == read

    store.apply_receipts([receipt("o1", "played", T0 + 400)])
    played = stored(store, doc)
    assert (played.status, played.read_at) == ("played", ms_to_datetime(T0 + 200))


def test_read_receipt_first_also_records_delivered(store: Store) -> None:
    """Reaching ``read`` implies having been delivered: deliveredAt is not left empty."""
    doc = message("o1", direction="outbound", status="sent")
    store.upsert_messages([doc])
    store.apply_receipts([receipt("o1", "read", T0 + 50)])
    got = stored(store, doc)
    assert (got.status, got.delivered_at, got.read_at) == ("read", ms_to_datetime(T0 + 50), ms_to_datetime(T0 + 50))


def test_several_receipts_for_one_message_in_one_call(store: Store) -> None:
    doc = message("o1", direction="outbound", status="sent")
    store.upsert_messages([doc])
    store.apply_receipts([receipt("o1", "read", T0 + 20), receipt("o1", "delivered", T0 + 10)])
    got = stored(store, doc)
    assert (got.status, got.read_at) == ("read", ms_to_datetime(T0 + 20))


def test_receipt_for_missing_message_is_returned_not_lost(store: Store) -> None:
    store.upsert_messages([message("present", direction="outbound", status="sent")])
    early = receipt("not-yet", "read", T0 + 10)
    assert store.apply_receipts([early, receipt("present", "delivered")]) == [early]
    late = message("not-yet", direction="outbound", status="sent")
    store.upsert_messages([late])
    assert store.apply_receipts([early]) == []
    assert stored(store, late).status == "read"


# ---------------------------------------------------------------------------------------------
# edits, revokes, reactions
# ---------------------------------------------------------------------------------------------


def test_edit_keeps_body_and_records_latest_edit(store: Store) -> None:
    doc = message("m1", body="original")
    store.upsert_messages([doc])
    assert store.apply_mutations([edit("m1", "second", T0 + 20)]) == []
    store.apply_mutations([edit("m1", "first", T0 + 10)])  # an older edit arriving late
    got = stored(store, doc)
    assert (got.body, got.edited_body, got.edited_at) == ("original", "second", ms_to_datetime(T0 + 20))


def test_revoke_marks_deleted_drops_text_and_survives_replay(store: Store) -> None:
    doc = message("m1", body="oops")
    store.upsert_messages([doc])
    store.apply_mutations([revoke("m1", T0 + 30)])
    got = stored(store, doc)
    assert (got.deleted, got.deleted_at, got.body) == (True, ms_to_datetime(T0 + 30), "")
    # Neither a replay of the original nor a later edit brings the text back.
    store.upsert_messages([doc])
    store.apply_mutations([edit("m1", "edited", T0 + 40)])
    again = stored(store, doc)
    assert (again.body, again.edited_body, again.deleted) == ("", None, True)


def test_reactions_add_replace_and_remove(store: Store) -> None:
    doc = message("m1")
    store.upsert_messages([doc])
    store.apply_mutations([reaction("m1", REACTOR_A, "👍"), reaction("m1", REACTOR_B, "❤️")])
    assert stored(store, doc).reactions == {REACTOR_A: "👍", REACTOR_B: "❤️"}
    store.apply_mutations([reaction("m1", REACTOR_A, "😂")])
    store.apply_mutations([reaction("m1", REACTOR_B, "")])
    # The map is replaced whole: a removed reactor does not linger.
    assert stored(store, doc).reactions == {REACTOR_A: "😂"}
    store.apply_mutations([reaction("m1", REACTOR_A, "")])
    assert stored(store, doc).reactions is None


def test_mutations_for_missing_targets_are_returned(store: Store) -> None:
    store.upsert_messages([message("m1")])
    lost = [edit("gone", "x"), revoke("gone"), reaction("gone", REACTOR_A, "👍")]
    assert store.apply_mutations([*lost, reaction("m1", REACTOR_A, "👍")]) == lost
    assert store.get_message(tid(), "gone") is None


# ---------------------------------------------------------------------------------------------
# outbound: queued -> re-keyed to WhatsApp's id, or failed
# ---------------------------------------------------------------------------------------------


def test_finish_outbound_rekeys_queued_message(store: Store) -> None:
    local = queued("local-1", body="hi there")
    store.upsert_messages([local])
    before = stored(store, local)
    store.finish_outbound(local.thread_id, "local-1", wa_message_id="WA1", status="sent", ts_ms=T0 + 5)
    assert store.get_message(local.thread_id, "local-1") is None
    got = store.get_message(local.thread_id, "WA1")
    assert got is not None
    assert (got.id, got.wa_message_id, got.status, got.body, got.sync_source) == (
        "WA1", "WA1", "sent", "hi there", "outbound")
    assert got.created_at == before.created_at
    assert [m.id for m in store.list_messages(local.thread_id, limit=10)] == ["WA1"]


def test_finish_outbound_merges_with_an_echo_already_stored(store: Store) -> None:
    """Our own send, seen back on the wire (and even read) before we settled it: one document."""
    local = queued("local-1", body="hi there")
    store.upsert_messages([local])
    store.upsert_messages([message("WA1", direction="outbound", body="hi there", status="sent", ts_ms=T0 + 3)])
    store.apply_receipts([receipt("WA1", "read", T0 + 50)])
    store.finish_outbound(local.thread_id, "local-1", wa_message_id="WA1", status="sent", ts_ms=T0 + 5)
    msgs = store.list_messages(local.thread_id, limit=10)
    assert [m.id for m in msgs] == ["WA1"]
    assert (msgs[0].status, msgs[0].read_at, msgs[0].sync_source) == ("read", ms_to_datetime(T0 + 50), "outbound")


def test_finish_outbound_retry_is_harmless(store: Store) -> None:
    local = queued("local-1")
    store.upsert_messages([local])
    for _ in range(2):
        store.finish_outbound(local.thread_id, "local-1", wa_message_id="WA1", status="sent", ts_ms=T0 + 5)
    assert [(m.id, m.status) for m in store.list_messages(local.thread_id, limit=10)] == [("WA1", "sent")]


def test_finish_outbound_failure_marks_failed(store: Store) -> None:
    local = queued("local-1")
    store.upsert_messages([local])
    store.finish_outbound(local.thread_id, "local-1", wa_message_id="", status="failed", ts_ms=T0 + 5, error="boom")
    got = stored(store, local)
    assert (got.id, got.status) == ("local-1", "failed")


# ---------------------------------------------------------------------------------------------
# threads: summaries forward only
# ---------------------------------------------------------------------------------------------


def test_advance_creates_thread_with_summary(store: Store) -> None:
    written = store.advance_threads(
        [summary(T0, preview="hi", display_name="Ana", phone_e164="+40711111111")]
    )
    assert written == 1
    got = store.get_thread(tid())
    assert got is not None
    assert (got.account_id, got.client_jid, got.display_name, got.phone_e164, got.is_group) == (
        ACCOUNT, PEER, "Ana", "+40711111111", False)
    assert (got.last_message_at, got.last_message_at_ms, got.last_message_preview) == (ms_to_datetime(T0), T0, "hi")
    assert (got.last_message_direction, got.last_inbound_at, got.last_inbound_at_ms) == (
        "inbound", ms_to_datetime(T0), T0)
    assert got.alias_jids == []
    assert got.updated_at is not None
    assert store.advance_threads([summary(T0, preview="hi", display_name="Ana")]) == 0  # replay


def test_older_message_never_overwrites_newer_summary(store: Store) -> None:
    store.advance_threads([summary(T0 + 100, preview="newer")])
    assert store.advance_threads([summary(T0 + 50, preview="older (backfill)")]) == 0
    got = store.get_thread(tid())
    assert got is not None
    assert (got.last_message_at_ms, got.last_message_preview) == (T0 + 100, "newer")
    store.advance_threads([summary(T0 + 200, preview="newest", direction="outbound")])
    got = store.get_thread(tid())
    assert got is not None
    assert (got.last_message_at_ms, got.last_message_preview, got.last_message_direction) == (
        T0 + 200, "newest", "outbound")


def test_last_inbound_moves_forward_on_its_own(store: Store) -> None:
    """An outbound newest message leaves lastInbound alone; an older inbound never regresses it."""
    store.advance_threads([summary(T0 + 100, direction="inbound")])
    store.advance_threads([summary(T0 + 200, direction="outbound")])
    store.advance_threads([summary(T0 + 50, direction="inbound")])
    got = store.get_thread(tid())
    assert got is not None
    assert (got.last_message_at_ms, got.last_message_direction) == (T0 + 200, "outbound")
    assert (got.last_inbound_at_ms, got.last_inbound_at) == (T0 + 100, ms_to_datetime(T0 + 100))


def test_preview_is_first_100_characters(store: Store) -> None:
    store.advance_threads([summary(T0, preview="x" * 99 + "é" + "tail" * 20)])
    got = store.get_thread(tid())
    assert got is not None
    assert got.last_message_preview == "x" * 99 + "é"


def test_several_summaries_for_one_thread_in_one_call_are_folded(store: Store) -> None:
    written = store.advance_threads(
        [
            summary(T0 + 2, preview="two"),
            summary(T0 + 5, preview="five", display_name="Ana"),
            summary(T0 + 1, preview="one", is_group=False),
            summary(T0 + 3, client_jid=GROUP, preview="group", is_group=True, display_name="Team"),
        ]
    )
    assert written == 2
    got, group = store.get_thread(tid()), store.get_thread(tid(GROUP))
    assert got is not None and group is not None
    assert (got.last_message_at_ms, got.last_message_preview, got.display_name) == (T0 + 5, "five", "Ana")
    assert (group.is_group, group.display_name, group.last_message_at_ms) == (True, "Team", T0 + 3)


def test_inbox_twins_are_written_with_the_same_value(store: Store) -> None:
    """``lastMessageText`` follows ``lastMessagePreview`` (forward-only, same value) and
    ``normalizedPhone`` sits beside ``phoneE164``: the inbox prefers the twins."""
    store.advance_threads([summary(T0 + 100, preview="newer", phone_e164="+40711111111")])
    store.advance_threads([summary(T0 + 50, preview="older")])
    got = store.get_thread(tid())
    assert got is not None
    assert (got.last_message_preview, got.last_message_text) == ("newer", "newer")
    assert (got.phone_e164, got.normalized_phone) == ("+40711111111", "+40711111111")


def test_a_thread_with_no_name_and_no_phone_carries_its_placeholder(store: Store) -> None:
    """A LID-only contact without a push name and a group without a subject get
    ``placeholder_name``; a real name, when it comes, replaces it and stays."""
    store.advance_threads([summary(T0, client_jid=PEER_LID), summary(T0, client_jid=GROUP, is_group=True)])
    lid, group = store.get_thread(tid(PEER_LID)), store.get_thread(tid(GROUP))
    assert lid is not None and group is not None
    assert (lid.display_name, group.display_name) == (placeholder_name(PEER_LID), placeholder_name(GROUP))
    assert (lid.display_name, group.display_name) == ("Contact \u20262345", "Group \u20260000")
    assert store.advance_threads([summary(T0, client_jid=PEER_LID)]) == 0  # stable
    store.advance_threads([summary(T0 + 1, client_jid=GROUP, display_name="Team")])
    store.advance_threads([summary(T0 + 2, client_jid=GROUP)])
    group = store.get_thread(tid(GROUP))
    assert group is not None and group.display_name == "Team"
    store.advance_threads([summary(T0)])  # a phone-number thread: the inbox shows the number
    phone_thread = store.get_thread(tid())
    assert phone_thread is not None and phone_thread.display_name == ""


def test_a_placeholder_never_travels_into_a_phone_number_thread(store: Store) -> None:
    store.advance_threads([summary(T0 + 5, client_jid=PEER_LID, preview="lid")])
    store.advance_threads([summary(T0, display_name="Ana")])
    store.merge_threads(ACCOUNT, PEER_LID, PEER)
    thread = store.get_thread(tid())
    assert thread is not None
    assert (thread.display_name, thread.last_message_text) == ("Ana", "lid")
    store.advance_threads([summary(T0 + 9, client_jid=OTHER_LID, preview="x")])
    store.merge_threads(ACCOUNT, OTHER_LID, OTHER)
    other = store.get_thread(tid(OTHER))
    assert other is not None and other.display_name == ""


# ---------------------------------------------------------------------------------------------
# merge_threads: LID thread folded into the phone-number thread (SPEC §4)
# ---------------------------------------------------------------------------------------------


def _lid_and_phone_threads(store: Store) -> None:
    store.upsert_messages(
        [
            message("p1", ts_ms=T0 + 1, body="on phone thread"),
            message("shared", ts_ms=T0 + 2, body="seen under both"),
            message("l1", ts_ms=T0 + 3, client_jid=PEER_LID, body="lid one", created_at=ms_to_datetime(T0 + 3)),
            message("l2", ts_ms=T0 + 9, client_jid=PEER_LID, body="lid newest"),
            message("shared", ts_ms=T0 + 2, client_jid=PEER_LID, body="seen under both"),
        ]
    )
    store.advance_threads(
        [
            summary(T0 + 2, preview="seen under both", display_name="Ana"),
            summary(T0 + 9, client_jid=PEER_LID, preview="lid newest", display_name="Ana (lid)"),
        ]
    )


def test_merge_threads_moves_messages_and_folds_summary(store: Store) -> None:
    _lid_and_phone_threads(store)
    phone_shared = stored(store, message("shared"))

    assert store.merge_threads(ACCOUNT, PEER_LID, PEER) == 3

    assert store.get_thread(tid(PEER_LID)) is None
    assert store.list_messages(tid(PEER_LID), limit=10) == []
    msgs = store.list_messages(tid(PEER), limit=10, order="asc")
    assert [m.id for m in msgs] == ["p1", "shared", "l1", "l2"]
    assert {(m.client_jid, m.thread_id) for m in msgs} == {(PEER, tid(PEER))}
    assert stored(store, message("shared")).created_at == phone_shared.created_at  # target's first write
    assert stored(store, message("l1")).created_at == ms_to_datetime(T0 + 3)  # moved, first-seen kept
    thread = store.get_thread(tid(PEER))
    assert thread is not None
    assert thread.alias_jids == [PEER_LID]
    assert (thread.last_message_at_ms, thread.last_message_preview) == (T0 + 9, "lid newest")


def test_merge_threads_is_idempotent(store: Store) -> None:
    _lid_and_phone_threads(store)
    store.merge_threads(ACCOUNT, PEER_LID, PEER)
    thread = store.get_thread(tid(PEER))
    msgs = store.list_messages(tid(PEER), limit=10)
    assert store.merge_threads(ACCOUNT, PEER_LID, PEER) == 0
    assert store.get_thread(tid(PEER)) == thread
    assert store.list_messages(tid(PEER), limit=10) == msgs


def test_merge_into_a_thread_that_does_not_exist_yet(store: Store) -> None:
    store.upsert_messages([message("l1", ts_ms=T0 + 3, client_jid=PEER_LID)])
    store.advance_threads([summary(T0 + 3, client_jid=PEER_LID, preview="hello", display_name="Ana")])
    assert store.merge_threads(ACCOUNT, PEER_LID, PEER) == 1
    thread = store.get_thread(tid(PEER))
    assert thread is not None
    assert (thread.client_jid, thread.alias_jids, thread.display_name, thread.last_message_at_ms) == (
        PEER, [PEER_LID], "Ana", T0 + 3)
    assert [t.client_jid for t in store.list_threads(ACCOUNT, limit=10)] == [PEER]


# ---------------------------------------------------------------------------------------------
# queries
# ---------------------------------------------------------------------------------------------


def test_list_threads_newest_first_with_limit(store: Store) -> None:
    jids = [f"4071000000{i}@s.whatsapp.net" for i in range(5)]
    store.advance_threads([summary(T0 + ms, client_jid=jid) for jid, ms in zip(jids, [30, 10, 50, 20, 40], strict=True)])
    store.advance_threads([summary(T0 + 99, client_jid=PEER, account_id="other-account")])
    listed = store.list_threads(ACCOUNT, limit=3)
    assert [t.last_message_at_ms for t in listed] == [T0 + 50, T0 + 40, T0 + 30]
    assert [t.client_jid for t in listed] == [jids[2], jids[4], jids[0]]
    assert len(store.list_threads(ACCOUNT, limit=50)) == 5


def test_list_messages_ordered_by_client_time(store: Store) -> None:
    store.upsert_messages([message(f"m{ms}", ts_ms=T0 + ms) for ms in (30, 10, 50, 20, 40)])
    store.upsert_messages([message("elsewhere", client_jid=OTHER, ts_ms=T0)])
    assert [m.ts_client_ms - T0 for m in store.list_messages(tid(), limit=3)] == [50, 40, 30]
    assert [m.ts_client_ms - T0 for m in store.list_messages(tid(), limit=3, order="asc")] == [10, 20, 30]
    oldest, newest = store.oldest_message(tid()), store.newest_message(tid())
    assert oldest is not None and newest is not None
    assert (oldest.id, newest.id) == ("m10", "m50")


def test_first_message_since(store: Store) -> None:
    store.upsert_messages([message(f"m{ms}", ts_ms=T0 + ms) for ms in (30, 10, 50, 20, 40)])
    store.upsert_messages([message("elsewhere", client_jid=OTHER, ts_ms=T0 + 25)])
    found = store.first_message_since(tid(), T0 + 25)
    assert found is not None and found.id == "m30"
    exact = store.first_message_since(tid(), T0 + 20)
    assert exact is not None and exact.id == "m20"
    assert store.first_message_since(tid(), T0 + 51) is None
    assert store.first_message_since(tid("40700000000@s.whatsapp.net"), 0) is None


def test_patch_threads_marks_and_repairs_existing_threads_only(store: Store) -> None:
    """Backfill and recent-sync marks replace what was there; ``newest`` moves the summary to
    the given message even backwards (repair of a summary stamped in the future); absent
    threads are never created; a patch that changes nothing writes nothing."""
    store.advance_threads([summary(T0 + 10_000, preview="stamped in the future")])
    newest = message("real-newest", ts_ms=T0 + 100, body="the real newest", direction="outbound")
    patch = ThreadPatch(thread_id=tid(), last_backfill_ms=T0 + 5, backfill_exhausted_ms=T0 + 6,
                        gap_checked_through_ms=T0 + 7, newest=newest, seen_last_ms=T0 + 10_000)
    absent = ThreadPatch(thread_id=tid(OTHER), last_backfill_ms=T0)
    assert store.patch_threads([patch, absent]) == 1
    got = store.get_thread(tid())
    assert got is not None
    assert (got.last_backfill_at, got.backfill_exhausted_at, got.gap_checked_through_ms) == (
        ms_to_datetime(T0 + 5), ms_to_datetime(T0 + 6), T0 + 7)
    assert (got.last_message_at_ms, got.last_message_at, got.last_message_preview, got.last_message_direction) == (
        T0 + 100, ms_to_datetime(T0 + 100), "the real newest", "outbound")
    assert store.get_thread(tid(OTHER)) is None
    assert store.patch_threads([patch]) == 0  # replay
    assert store.patch_threads([]) == 0
    # A summary that moved since repair looked is left alone.
    store.advance_threads([summary(T0 + 200, preview="live since")])
    assert store.patch_threads([patch]) == 0
    got = store.get_thread(tid())
    assert got is not None and (got.last_message_at_ms, got.last_message_preview) == (T0 + 200, "live since")


def test_account_gaps_and_coverage_round_trip(store: Store) -> None:
    gaps = [SyncGap(from_ms=T0, to_ms=T0 + 60_000, reason="restart"),
            SyncGap(from_ms=T0 + 90_000, to_ms=T0 + 95_000, reason="disconnected")]
    store.update_account(ACCOUNT, AccountDoc(covered_until=ms_to_datetime(T0 + 99_000), sync_gaps=gaps))
    got = store.get_account(ACCOUNT)
    assert got is not None
    assert got.sync_gaps == gaps and got.covered_until == ms_to_datetime(T0 + 99_000)
    store.update_account(ACCOUNT, AccountDoc(sync_gaps=[]))
    got = store.get_account(ACCOUNT)
    assert got is not None and got.sync_gaps == []
def _pages(fetch: Callable[[PageKey | None], list[Any]], key: Callable[[Any], PageKey],
           between: Callable[[int], None] = lambda _: None) -> list[Any]:
    """Every item, page by page, each page starting after the last item of the one before."""
    items: list[Any] = []
    after: PageKey | None = None
    for page_number in range(1000):
        page = fetch(after)
        if not page:
            return items
        items.extend(page)
        after = key(page[-1])
        between(page_number)
    raise AssertionError("paging never ended")


def _message_key(doc: MessageDoc) -> PageKey:
    return PageKey(ms=doc.ts_client_ms, id=doc.id)


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_message_pages_have_no_gaps_or_repeats_with_ties(store: Store, order: MessageOrder) -> None:
    # Ties on tsClientMs (three messages per millisecond) must still page exactly once each.
    store.upsert_messages([message(f"m{n:02d}", ts_ms=T0 + n // 3) for n in range(20)])
    everything = store.list_messages(tid(), limit=100, order=order)
    paged = _pages(lambda after: store.list_messages(tid(), limit=7, order=order, after=after), _message_key)
    assert [m.id for m in paged] == [m.id for m in everything]
    assert len({m.id for m in paged}) == 20


def test_newest_first_pages_ignore_messages_arriving_meanwhile(store: Store) -> None:
    store.upsert_messages([message(f"old{n:02d}", ts_ms=T0 + n) for n in range(12)])

    def arrive(page_number: int) -> None:
        store.upsert_messages([message(f"new{page_number}", ts_ms=T0 + 1_000 + page_number)])

    paged = _pages(lambda after: store.list_messages(tid(), limit=5, after=after), _message_key, arrive)
    assert [m.id for m in paged] == [f"old{n:02d}" for n in reversed(range(12))]


def test_oldest_first_pages_pick_up_messages_arriving_meanwhile(store: Store) -> None:
    store.upsert_messages([message(f"old{n:02d}", ts_ms=T0 + n) for n in range(10)])
    arrived: list[str] = []

    def arrive(page_number: int) -> None:
        if page_number < 3:
            arrived.append(f"new{page_number}")
            store.upsert_messages([message(arrived[-1], ts_ms=T0 + 1_000 + page_number)])

    paged = _pages(lambda after: store.list_messages(tid(), limit=4, order="asc", after=after),
                   _message_key, arrive)
    assert [m.id for m in paged] == [f"old{n:02d}" for n in range(10)] + arrived


def test_thread_pages_walk_every_thread_once(store: Store) -> None:
    jids = [f"407100000{i:02d}@s.whatsapp.net" for i in range(11)]
    # Two threads share a time (ties by id); two have no lastMessageAtMs (they come last).
    store.advance_threads([summary(T0 + i // 2, client_jid=jid) for i, jid in enumerate(jids[:9])])
    store.advance_threads([summary(None, client_jid=jid) for jid in jids[9:]])
    store.advance_threads([summary(T0 + 99, client_jid=PEER, account_id="other-account")])
    everything = store.list_threads(ACCOUNT, limit=100)
    assert len(everything) == 11

    def key(thread: ThreadDoc) -> PageKey:
        return PageKey(ms=thread.last_message_at_ms, id=thread_id_for(thread.account_id, thread.client_jid))

    paged = _pages(lambda after: store.list_threads(ACCOUNT, limit=3, after=after), key)
    assert [t.client_jid for t in paged] == [t.client_jid for t in everything]


def test_find_thread_by_its_jid_or_a_merged_alias(store: Store) -> None:
    _lid_and_phone_threads(store)
    store.merge_threads(ACCOUNT, PEER_LID, PEER)
    by_jid = store.find_thread(ACCOUNT, PEER)
    by_alias = store.find_thread(ACCOUNT, PEER_LID)
    assert by_jid is not None and by_alias is not None
    assert by_jid.client_jid == by_alias.client_jid == PEER
    assert store.find_thread("other-account", PEER_LID) is None
    assert store.find_thread(ACCOUNT, "40799999999@s.whatsapp.net") is None


def test_threads_missing_last_message(store: Store) -> None:
    store.advance_threads(
        [
            summary(T0, client_jid=PEER),
            summary(None, client_jid=OTHER, display_name="no messages yet"),
            summary(None, client_jid=GROUP, is_group=True),
        ]
    )
    missing = store.threads_missing_last_message(ACCOUNT, limit=10)
    assert sorted(t.client_jid for t in missing) == sorted([OTHER, GROUP])
    assert len(store.threads_missing_last_message(ACCOUNT, limit=1)) == 1
    assert store.threads_missing_last_message("other-account", limit=10) == []
    # The inbox still lists them, after every dated thread.
    assert [t.client_jid for t in store.list_threads(ACCOUNT, limit=10)][:1] == [PEER]
    assert len(store.list_threads(ACCOUNT, limit=10)) == 3


@pytest.mark.parametrize("weird", ["a/b@s.whatsapp.net", "a%2Fb@s.whatsapp.net", "..", "__x__"])
def test_ids_that_firestore_forbids_round_trip(store: Store, weird: str) -> None:
    """Document ids are escaped reversibly: a ``/`` (or a literal ``%2F``) survives every path."""
    plain = message("m/1", client_jid=PEER)
    doc = message("m/1", client_jid=weird, body="odd")
    store.upsert_messages([plain, doc])
    store.advance_threads([summary(T0, client_jid=weird, preview="odd")])
    assert stored(store, doc) == replace(stored(store, doc), id="m/1", thread_id=tid(weird), body="odd")
    assert [m.body for m in store.list_messages(tid(weird), limit=10)] == ["odd"]
    thread = store.get_thread(tid(weird))
    assert thread is not None and thread.client_jid == weird
    assert [t.client_jid for t in store.list_threads(ACCOUNT, limit=10)] == [weird]
    store.update_account("acct/with%slash", AccountDoc(state="connected"))
    assert "acct/with%slash" in store.list_account_ids()


def test_unstorable_document_id_is_a_store_error_not_unavailable(store: Store) -> None:
    """A message id past Firestore's 1,500-byte document-id limit is bad data, refused the same
    way by both backends: a ``StoreError`` that is not ``StoreUnavailable`` (never retried)."""
    from wadaemon.store.contract import StoreError, StoreUnavailable

    with pytest.raises(StoreError) as caught:
        store.upsert_messages([message("x" * 1600, client_jid=PEER)])
    assert not isinstance(caught.value, StoreUnavailable)
    store.upsert_messages([message("m-ok", client_jid=PEER)])  # the store carries on
    assert store.get_message(tid(), "m-ok") is not None


def test_missing_documents_read_as_none(store: Store) -> None:
    assert store.get_message(tid(), "nope") is None
    assert store.get_thread(tid()) is None
    assert store.get_account("nope") is None
    assert store.oldest_message(tid()) is None
    assert store.newest_message(tid()) is None
    assert store.list_messages(tid(), limit=10) == []
    assert store.list_threads(ACCOUNT, limit=10) == []
    assert store.read_lease("account", "nope") is None
    assert store.list_account_ids() == []


def test_ping(store: Store) -> None:
    assert store.ping() is True


# ---------------------------------------------------------------------------------------------
# accounts: patches replace whole top-level fields and keep siblings
# ---------------------------------------------------------------------------------------------


def test_account_patch_keeps_sibling_fields(store: Store) -> None:
    store.update_account(ACCOUNT, AccountDoc(state="connected", phone_jid=PEER))
    store.update_account(
        ACCOUNT, AccountDoc(history_sync_count=2, last_history_sync_result=HistorySyncResult(saved=5, total=6))
    )
    got = store.get_account(ACCOUNT)
    assert got is not None
    assert (got.state, got.phone_jid, got.history_sync_count) == ("connected", PEER, 2)
    assert got.last_history_sync_result == HistorySyncResult(saved=5, total=6)
    assert got.updated_at is not None


def test_account_patch_replaces_nested_maps_whole(store: Store) -> None:
    running = AutoBackfillStatus(running=True, started_at=ms_to_datetime(T0), trigger="connect", holder="i-1")
    store.update_account(ACCOUNT, AccountDoc(last_auto_backfill_status=running))
    store.update_account(
        ACCOUNT,
        AccountDoc(
            last_backfill_result=BackfillResult(
                threads=2, errors=1, thread_results=[BackfillThreadResult(thread_id="t1", error="x")]
            )
        ),
    )
    success = AutoBackfillStatus(running=False, ok=True, threads=3, messages=40, duration_ms=1200)
    store.update_account(
        ACCOUNT, AccountDoc(last_auto_backfill_status=success, last_backfill_result=BackfillResult(threads=1))
    )
    got = store.get_account(ACCOUNT)
    assert got is not None
    # No startedAt/trigger/holder left over from "running"; no threadResults from the last run.
    assert got.last_auto_backfill_status == success
    assert got.last_backfill_result == BackfillResult(threads=1)


def test_list_account_ids(store: Store) -> None:
    for account in ("b-acct", "a-acct"):
        store.update_account(account, AccountDoc(state="connecting"))
    assert store.list_account_ids() == ["a-acct", "b-acct"]


# ---------------------------------------------------------------------------------------------
# leases: compare-and-swap
# ---------------------------------------------------------------------------------------------

KINDS: list[LeaseKind] = ["account", "backfill", "recent_sync"]
TTL = 60_000


@pytest.mark.parametrize("kind", KINDS)
def test_lease_acquire_and_read(store: Store, kind: LeaseKind) -> None:
    lease = store.acquire_lease(kind, ACCOUNT, "inst-a", ttl_ms=TTL, now_ms=T0)
    assert lease == Lease(kind=kind, key=ACCOUNT, owner_id="inst-a", expires_at_ms=T0 + TTL, acquired_at_ms=T0,
                          epoch=1 if kind == "account" else 0)
    assert store.read_lease(kind, ACCOUNT) == lease


@pytest.mark.parametrize("kind", KINDS)
def test_lease_refused_to_another_owner_until_expiry(store: Store, kind: LeaseKind) -> None:
    held = store.acquire_lease(kind, ACCOUNT, "inst-a", ttl_ms=TTL, now_ms=T0)
    assert held is not None
    assert store.acquire_lease(kind, ACCOUNT, "inst-b", ttl_ms=TTL, now_ms=T0 + TTL - 1) is None
    assert store.read_lease(kind, ACCOUNT) == held
    taken = store.acquire_lease(kind, ACCOUNT, "inst-b", ttl_ms=TTL, now_ms=T0 + TTL)
    assert taken is not None and taken.owner_id == "inst-b"
    assert (taken.acquired_at_ms, taken.expires_at_ms) == (T0 + TTL, T0 + 2 * TTL)
    # The former holder has lost it: it can neither renew nor release.
    assert store.renew_lease(held, ttl_ms=TTL, now_ms=T0 + TTL + 1) is None
    assert store.release_lease(held) is False
    assert store.read_lease(kind, ACCOUNT) == taken


@pytest.mark.parametrize("kind", KINDS)
def test_lease_reacquire_by_holder_extends_it(store: Store, kind: LeaseKind) -> None:
    store.acquire_lease(kind, ACCOUNT, "inst-a", ttl_ms=TTL, now_ms=T0)
    again = store.acquire_lease(kind, ACCOUNT, "inst-a", ttl_ms=TTL, now_ms=T0 + 10)
    assert again is not None
    assert (again.acquired_at_ms, again.expires_at_ms) == (T0, T0 + 10 + TTL)


@pytest.mark.parametrize("kind", KINDS)
def test_lease_renew_and_release_only_by_holder(store: Store, kind: LeaseKind) -> None:
    lease = store.acquire_lease(kind, ACCOUNT, "inst-a", ttl_ms=TTL, now_ms=T0)
    assert lease is not None
    impostor = replace(lease, owner_id="inst-b")
    assert store.renew_lease(impostor, ttl_ms=TTL, now_ms=T0 + 1) is None
    assert store.release_lease(impostor) is False

    renewed = store.renew_lease(lease, ttl_ms=TTL, now_ms=T0 + 1_000)
    assert renewed is not None
    assert (renewed.owner_id, renewed.expires_at_ms, renewed.acquired_at_ms) == ("inst-a", T0 + 1_000 + TTL, T0)
    assert store.read_lease(kind, ACCOUNT) == renewed

    assert store.release_lease(renewed) is True
    assert store.read_lease(kind, ACCOUNT) is None
    assert store.release_lease(renewed) is False
    assert store.renew_lease(renewed, ttl_ms=TTL, now_ms=T0 + 2_000) is None
    # Released means free for anyone, immediately.
    assert store.acquire_lease(kind, ACCOUNT, "inst-b", ttl_ms=TTL, now_ms=T0 + 2_000) is not None


def test_lease_kinds_and_keys_are_independent(store: Store) -> None:
    for kind in KINDS:
        assert store.acquire_lease(kind, ACCOUNT, f"{kind}-owner", ttl_ms=TTL, now_ms=T0) is not None
    assert store.acquire_lease("account", "acct-2", "inst-z", ttl_ms=TTL, now_ms=T0) is not None
    leases = [store.read_lease(kind, ACCOUNT) for kind in KINDS]
    assert [lease.owner_id if lease else None for lease in leases] == [f"{kind}-owner" for kind in KINDS]


def test_backfill_lock_is_mirrored_on_account(store: Store) -> None:
    store.update_account(ACCOUNT, AccountDoc(state="connected"))
    lease = store.acquire_lease("backfill", ACCOUNT, "inst-a", ttl_ms=TTL, now_ms=T0)
    assert lease is not None
    account = store.get_account(ACCOUNT)
    assert account is not None
    assert (account.auto_backfill_lease_holder, account.auto_backfill_lease_until,
            account.auto_backfill_lease_acquired_at) == ("inst-a", ms_to_datetime(T0 + TTL), ms_to_datetime(T0))
    assert account.state == "connected"

    renewed = store.renew_lease(lease, ttl_ms=TTL, now_ms=T0 + 5_000)
    assert renewed is not None
    account = store.get_account(ACCOUNT)
    assert account is not None and account.auto_backfill_lease_until == ms_to_datetime(T0 + 5_000 + TTL)

    store.release_lease(renewed)
    account = store.get_account(ACCOUNT)
    assert account is not None
    assert (account.auto_backfill_lease_holder, account.auto_backfill_lease_until) == (None, None)
    assert account.state == "connected"


def test_recent_sync_lease_lives_on_account_doc(store: Store) -> None:
    """The recent-sync lease and status patches share ``accounts/*`` without disturbing each other."""
    store.update_account(ACCOUNT, AccountDoc(state="connected"))
    lease = store.acquire_lease("recent_sync", ACCOUNT, "inst-a", ttl_ms=TTL, now_ms=T0)
    assert lease is not None
    store.update_account(ACCOUNT, AccountDoc(last_recent_sync_at=ms_to_datetime(T0 + 1)))
    account = store.get_account(ACCOUNT)
    assert account is not None
    assert (account.recent_sync_lease_holder, account.recent_sync_lease_until,
            account.recent_sync_lease_acquired_at) == ("inst-a", ms_to_datetime(T0 + TTL), ms_to_datetime(T0))
    assert (account.state, account.last_recent_sync_at) == ("connected", ms_to_datetime(T0 + 1))
    assert store.read_lease("recent_sync", ACCOUNT) == lease
    # The backfill mirror is a different set of fields.
    assert account.auto_backfill_lease_holder is None

    store.release_lease(lease)
    account = store.get_account(ACCOUNT)
    assert account is not None
    assert (account.recent_sync_lease_holder, account.recent_sync_lease_until) == (None, None)
    assert account.state == "connected"


def test_lease_times_survive_at_millisecond_precision(store: Store) -> None:
    """Lease expiry is compared in ms; a stored timestamp must come back to the same ms."""
    odd = T0 + 123
    for kind in KINDS:
        lease = store.acquire_lease(kind, ACCOUNT, "inst-a", ttl_ms=4_567, now_ms=odd)
        assert lease is not None
        assert store.read_lease(kind, ACCOUNT) == lease
        assert lease.expires_at_ms - lease.acquired_at_ms == timedelta(milliseconds=4_567) // timedelta(milliseconds=1)


# ---------------------------------------------------------------------------------------------
# account leases: fencing epochs, batched renewal; instance heartbeats
# ---------------------------------------------------------------------------------------------


def test_account_lease_epoch_grows_with_every_new_holder_and_survives_release(store: Store) -> None:
    first = store.acquire_lease("account", ACCOUNT, "inst-a", ttl_ms=TTL, now_ms=T0)
    assert first is not None and first.epoch == 1
    extended = store.acquire_lease("account", ACCOUNT, "inst-a", ttl_ms=TTL, now_ms=T0 + 5)
    assert extended is not None and extended.epoch == 1  # the same holder: no new epoch
    taken = store.acquire_lease("account", ACCOUNT, "inst-b", ttl_ms=TTL, now_ms=T0 + TTL + 5)
    assert taken is not None and taken.epoch == 2
    assert store.release_lease(taken) is True
    assert store.read_lease("account", ACCOUNT) is None
    assert store.list_account_leases() == []
    # The released document kept the counter: the next holder gets 3, never 1 again.
    again = store.acquire_lease("account", ACCOUNT, "inst-a", ttl_ms=TTL, now_ms=T0 + TTL + 6)
    assert again is not None and again.epoch == 3


def test_account_lease_of_another_epoch_is_not_ours(store: Store) -> None:
    """A process frozen past its lease, resumed under the same instance id after a successor
    with that id (a restart) took the account, must not renew or release the successor's lease."""
    old = store.acquire_lease("account", ACCOUNT, "inst-a", ttl_ms=TTL, now_ms=T0)
    assert old is not None
    store.acquire_lease("account", ACCOUNT, "inst-b", ttl_ms=TTL, now_ms=T0 + TTL)
    successor = store.acquire_lease("account", ACCOUNT, "inst-a", ttl_ms=TTL, now_ms=T0 + 3 * TTL)
    assert successor is not None and successor.epoch == 3
    assert store.renew_lease(old, ttl_ms=TTL, now_ms=T0 + 3 * TTL + 1) is None
    assert store.release_lease(old) is False
    assert store.read_lease("account", ACCOUNT) == successor


def test_renew_leases_judges_each_lease_alone(store: Store) -> None:
    mine = [store.acquire_lease("account", f"acct-{i}", "inst-a", ttl_ms=TTL, now_ms=T0) for i in range(4)]
    assert all(lease is not None for lease in mine)
    held = [lease for lease in mine if lease is not None]
    # acct-1 expired and was taken by another instance; acct-3 was released meanwhile.
    stolen = store.acquire_lease("account", "acct-1", "inst-b", ttl_ms=TTL, now_ms=T0 + TTL)
    store.release_lease(held[3])
    renewed = store.renew_leases(held, ttl_ms=TTL, now_ms=T0 + TTL + 10)
    assert [lease.expires_at_ms if lease else None for lease in renewed] == [T0 + 2 * TTL + 10, None,
                                                                             T0 + 2 * TTL + 10, None]
    assert store.read_lease("account", "acct-1") == stolen
    assert [lease.key for lease in store.list_account_leases()] == ["acct-0", "acct-1", "acct-2"]
    assert store.renew_leases([], ttl_ms=TTL, now_ms=T0) == []


def test_instances_heartbeat_documents(store: Store) -> None:
    a = InstanceDoc(instance_id="inst-a", heartbeat_at_ms=T0, started_at_ms=T0 - 5, version="1",
                    accounts=["x", "y"], pinned_accounts=[])
    b = InstanceDoc(instance_id="inst-b", heartbeat_at_ms=T0 + 1, started_at_ms=T0, version="1")
    store.put_instance(a)
    store.put_instance(b)
    store.put_instance(replace(a, heartbeat_at_ms=T0 + 2, accounts=["x"]))
    assert store.list_instances() == [replace(a, heartbeat_at_ms=T0 + 2, accounts=["x"]), b]
    store.delete_instance("inst-a")
    store.delete_instance("inst-unknown")
    assert store.list_instances() == [b]
