"""``wadaemon adopt`` on the database the old backend leaves behind (Firestore emulator only:
the legacy data only ever lived there).

The hand-made database of ``generator.scenario`` is adopted and compared with what a correct
adoption must leave (written out here, independently of the rules); then: a second run writes
nothing, a dry run writes nothing, a run killed at any commit and run again ends identical to
an uninterrupted one, and a document the daemon changes mid-run is re-read, not overwritten.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.legacy import generator as g
from wadaemon.adopt.runner import (
    AccountReport,
    Adopter,
    format_report,
    legacy_reasons,
    warn_if_unadopted,
)
from wadaemon.store.firestore import FirestoreStore
from wadaemon.store.legacy import LegacyFirestore

pytestmark = pytest.mark.firestore


class Killed(Exception):
    """Stands for the process dying at a commit."""


def snapshot(client: Any) -> dict[str, dict[str, Any]]:
    """Every document under the collections adoption touches: path -> fields."""
    out: dict[str, dict[str, Any]] = {}
    for name in ("accounts", "wadaemon_adopt", "wadaemon_adopt_orphans"):
        for snap in client.collection(name).stream():
            out[snap.reference.path] = snap.to_dict()
    for ref in client.collection("threads").list_documents():
        snap = ref.get()
        if snap.exists:
            out[ref.path] = snap.to_dict()
        for msg in ref.collection("messages").stream():
            out[msg.reference.path] = msg.to_dict()
    return out


def adopter(store: FirestoreStore, *, apply: bool = True, hook: Any = None) -> Adopter:
    return Adopter(LegacyFirestore(store), apply=apply, rate=0, now=lambda: g.NOW,
                   lid_map=lambda account: g.SESSION_LID_MAP if account == g.ACCOUNT else {},
                   commit_hook=hook)


def adopt_all(store: FirestoreStore, **kwargs: Any) -> list[AccountReport]:
    runner = adopter(store, **kwargs)
    return [runner.adopt_account(account) for account in (g.ACCOUNT, g.OTHER)]


@pytest.fixture
def legacy_db(firestore_store: FirestoreStore) -> FirestoreStore:
    g.write(firestore_store.client, g.scenario())
    return firestore_store


def messages_of(snap: dict[str, dict[str, Any]], thread_id: str) -> dict[str, dict[str, Any]]:
    prefix = f"threads/{thread_id}/messages/"
    return {path[len(prefix):]: fields for path, fields in snap.items() if path.startswith(prefix)}


def test_adoption_leaves_the_known_correct_database(legacy_db: FirestoreStore) -> None:
    reports = adopt_all(legacy_db)
    print(format_report(reports))
    snap = snapshot(legacy_db.client)
    threads = {path.split("/")[1]: f for path, f in snap.items() if path.count("/") == 1 and path.startswith("threads/")}

    # One thread per person; the LID, raw-JID and c.us threads are gone.
    assert set(threads) == {g.tid(j) for j in (g.P1, g.P2, g.P3_LID, g.P4, g.P5, g.GROUP, g.P6_LID)} | {
        g.tid("40766666666@s.whatsapp.net", g.OTHER)}
    p1 = messages_of(snap, g.tid(g.P1))
    assert set(p1) == {"m1", "m2", "m3", "m4", "m5", "WA1", "WA2", "req-3", "m6", "m7"}
    assert threads[g.tid(g.P1)]["aliasJids"] == [g.P1_LID]
    # The summary names the newest stored message, not the placeholder "now".
    assert threads[g.tid(g.P1)]["lastMessageAtMs"] == g.ms(g.at(21))
    assert threads[g.tid(g.P1)]["lastMessagePreview"] == threads[g.tid(g.P1)]["lastMessageText"] == "latest"
    assert threads[g.tid(g.P1)]["lastMessageDirection"] == "inbound"
    assert "redirectTo" not in threads[g.tid(g.P1)]
    # Old-layout fields the inbox reads are kept.
    assert threads[g.tid(g.P1)]["profilePictureUrl"] == "https://pps.example/ana.jpg"
    assert threads[g.tid(g.P1)]["phoneNumber"] == "+40711111111"
    # The receipt orphan of m3 folded its status in; mX, which has no message, is set aside.
    assert p1["m3"]["status"] == "read"
    orphans = [f for p, f in snap.items() if p.startswith("wadaemon_adopt_orphans/")]
    assert [o["adoptOriginalPath"].rsplit("/", 1)[1] for o in orphans] == ["mX"]
    # The outbound pair is one document keyed by WhatsApp's id: the echo's time, the best
    # status, both ids; an optimistic send never echoed is re-keyed; a queued one stays.
    assert p1["WA1"]["status"] == "delivered" and p1["WA1"]["clientMessageId"] == "req-1"
    assert p1["WA1"]["tsClientMs"] == g.ms(g.at(10 + 2 / 60))
    assert p1["WA2"]["clientMessageId"] == "req-2" and p1["WA2"]["tsClientMs"] == g.ms(g.at(11))
    assert p1["req-3"]["status"] == "queued" and p1["req-3"]["tsClientMs"] == g.ms(g.at(12))
    # Strings became timestamps, every message has tsClientMs and decodes; legacy fields stay.
    assert p1["m5"]["messageType"] == "image" and p1["m5"]["mediaUrl"] == "https://mmg.example/5.jpg"
    assert p1["m6"]["key"]["remoteJid"] == g.P1_LID and p1["m6"]["clientJid"] == g.P1
    # ... read back through the daemon's own typed store (which refuses what does not decode).
    for path in snap:
        parts = path.split("/")
        if "/messages/" in path:
            doc = legacy_db.get_message(parts[1], parts[3])
            assert doc is not None and doc.thread_id == parts[1] and doc.id == parts[3]
        elif path.startswith("threads/"):
            assert legacy_db.get_thread(parts[1]) is not None
    # P2 moved to its phone thread from the session's LID map; P3 (unknown number) stays a LID.
    assert set(messages_of(snap, g.tid(g.P2))) == {"m8"}
    assert threads[g.tid(g.P2)]["aliasJids"] == [g.P2_LID] and threads[g.tid(g.P2)]["displayName"] == "Bogdan"
    assert set(messages_of(snap, g.tid(g.P3_LID))) == {"m9"}
    assert set(messages_of(snap, g.tid(g.P4))) == {"m10"}
    # A contact with no name and no number gets the daemon's honest placeholder (else hidden).
    assert threads[g.tid(g.P6_LID)]["displayName"] == "Contact \u20266666"
    # A thread with no message has no summary; the group's stale lastMessageText is put right.
    assert "lastMessageAt" not in threads[g.tid(g.P5)] and "lastMessageAtMs" not in threads[g.tid(g.P5)]
    assert threads[g.tid(g.GROUP)]["lastMessageText"] == "standup"
    # The account: the stale running state and the abandoned lease are cleared, with a record.
    account = snap[f"accounts/{g.ACCOUNT}"]
    assert account["lastAutoBackfillStatus"]["running"] is False
    assert account["lastAutoBackfillStatus"]["errorCode"] == "stale_running_cleared"
    assert not {"claimedBy", "claimedAt", "leaseUntil", "autoBackfillLeaseUntil"} & set(account)
    assert account["adoptCleared"]["claimedBy"] == "node-1"
    assert account["adoptCleared"]["lastAutoBackfillStatus"]["holder"] == "node-1"
    # The other account was already right: nothing but its checkpoint was written.
    assert reports[1].writes == 0
    # The daemon's own typed reads now work on the adopted threads.
    listed = legacy_db.list_messages(g.tid(g.P1), limit=50, order="asc")
    assert [m.id for m in listed] == ["m1", "m2", "m3", "m4", "m5", "WA1", "WA2", "req-3", "m6", "m7"]


def test_a_second_run_and_a_dry_run_write_nothing(legacy_db: FirestoreStore) -> None:
    before = snapshot(legacy_db.client)
    dry = adopt_all(legacy_db, apply=False)
    assert snapshot(legacy_db.client) == before
    assert dry[0].fixes["merge_thread"] == 3 and dry[0].fixes["fold_outbound_twin"] == 1
    first = adopt_all(legacy_db)
    after = snapshot(legacy_db.client)
    assert first[0].writes > 0
    # A second run with the checkpoints removed re-plans everything and finds nothing to do.
    for account in (g.ACCOUNT, g.OTHER):
        legacy_db.client.document(f"wadaemon_adopt/{account}").delete()
    again = adopt_all(legacy_db)
    assert [r.writes for r in again] == [0, 0], format_report(again)
    assert {p: f for p, f in snapshot(legacy_db.client).items() if not p.startswith("wadaemon_adopt/")} == {
        p: f for p, f in after.items() if not p.startswith("wadaemon_adopt/")}


@pytest.mark.parametrize("kill_at", [1, 2, 4, 7, 11])
def test_a_run_killed_at_any_commit_and_run_again_ends_the_same(
    legacy_db: FirestoreStore, firestore_emulator: Any, kill_at: int
) -> None:
    adopt_all(legacy_db)
    clean = snapshot(legacy_db.client)
    firestore_emulator.reset()
    g.write(legacy_db.client, g.scenario())
    commits = itertools.count(1)

    def die(_: list[Any]) -> None:
        if next(commits) == kill_at:
            raise Killed

    with pytest.raises(Killed):
        adopt_all(legacy_db, hook=die)
    resumed = adopt_all(legacy_db)
    assert resumed[0].resumed_from or kill_at <= 2
    assert snapshot(legacy_db.client) == clean


def test_a_document_the_daemon_changes_mid_run_is_re_read_not_overwritten(legacy_db: FirestoreStore) -> None:
    client = legacy_db.client
    changed = False

    def daemon_writes(writes: list[Any]) -> None:
        nonlocal changed
        if not changed and any(w.path.endswith("/messages/m6") for w in writes):
            # Between adopt's read of the LID thread and the commit moving m6 out of it, the
            # daemon stores a receipt on m6 where it still is.
            changed = True
            client.document(f"threads/{g.tid(g.P1_LID)}/messages/m6").update({"status": "read"})

    reports = adopt_all(legacy_db, hook=daemon_writes)
    assert reports[0].conflicts >= 1
    m6 = client.document(f"threads/{g.tid(g.P1)}/messages/m6").get().to_dict()
    assert m6["status"] == "read" and m6["tsClientMs"] == g.ms(g.at(20))
    assert not client.document(f"threads/{g.tid(g.P1_LID)}/messages/m6").get().exists


def test_legacy_documents_are_noticed_until_adopted(legacy_db: FirestoreStore, caplog: Any) -> None:
    with caplog.at_level("WARNING", logger="wadaemon.adopt"):
        assert warn_if_unadopted(legacy_db, [g.OTHER]) == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert f"accountId={g.ACCOUNT}" in line and f"wadaemon adopt --account {g.ACCOUNT}" in line
    legacy = LegacyFirestore(legacy_db)
    reasons = legacy_reasons(legacy, g.ACCOUNT)
    assert "accounts.waJid" in reasons and "threads.isLid" in reasons
    assert legacy_reasons(legacy, g.OTHER) == []
    adopt_all(legacy_db)
    assert legacy_reasons(legacy, g.ACCOUNT) == []
    assert warn_if_unadopted(legacy_db, [g.ACCOUNT, g.OTHER]) == 0


async def test_after_adoption_live_traffic_lands_on_the_merged_threads(legacy_db: FirestoreStore, tmp_path: Any) -> None:
    """A message still addressed by the LID that adoption merged (the session's LID store does
    not know it: only the old backend's redirect did) lands in the person's phone thread."""
    import trio

    from tests.spine.harness import running, settings_for
    from wadaemon.whatsapp import protos as P
    from wadaemon.whatsapp.simphone import SimPhone

    adopt_all(legacy_db)
    phone = SimPhone(g.ACCOUNT, chats=0, history_messages=0, paired=True)
    settings = settings_for(tmp_path)
    async with running(settings, legacy_db, {g.ACCOUNT: phone}) as daemon:
        phone.emit_raw(P.raw(P.message_event(chat=g.P1_LID, sender=g.P1_LID, message_id="LIVE1",
                                             content=P.text("after adoption"), ts_ms=g.ms(g.at(90)))))
        assert await trio.to_thread.run_sync(phone.wait_idle, 30.0)
        with trio.fail_after(30):
            await daemon.accounts[g.ACCOUNT].wait_drained()
    assert legacy_db.get_message(g.tid(g.P1), "LIVE1") is not None
    assert legacy_db.get_thread(g.tid(g.P1_LID)) is None
    assert legacy_db.get_thread(g.tid(g.P1)).last_message_at_ms == g.ms(g.at(90))  # type: ignore[union-attr]


def _comparable(snap: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A snapshot without what records *when* adoption ran (checkpoints, set-aside times)."""
    out = {}
    for path, fields in snap.items():
        if path.startswith("wadaemon_adopt/"):
            continue
        fields = {k: v for k, v in fields.items() if k != "adoptSetAsideAt"}
        if "adoptCleared" in fields:
            fields["adoptCleared"] = {k: v for k, v in fields["adoptCleared"].items() if k != "clearedAt"}
        out[path] = fields
    return out


@pytest.mark.slow
def test_the_adopt_command_sigkilled_midway_and_run_again_ends_the_same(
    firestore_store: FirestoreStore, firestore_emulator: Any, tmp_path: Any
) -> None:
    """The real command in a child process, SIGKILLed once it has written part of a larger
    database, then run again: the result equals an uninterrupted run's."""
    import os
    import re
    import signal
    import subprocess
    import sys

    client = firestore_store.client
    g.write(client, dict(g.bulk(accounts=1, threads=20, messages=15)))
    adopter(firestore_store).adopt_account(f"account_prod_{0:032x}")
    clean = _comparable(snapshot(client))
    firestore_emulator.reset()
    g.write(client, dict(g.bulk(accounts=1, threads=20, messages=15)))

    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": firestore_emulator.hostport,
           "FIRESTORE_PROJECT": firestore_emulator.project, "WADAEMON_DATA_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "wadaemon.cli", "adopt", "--apply", "--rate", "300"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stderr is not None
        for line in child.stderr:  # progress lines: kill once some threads are done
            done = re.search(r": threads (\d+)/", line)
            if done and int(done.group(1)) >= 5:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    partial = _comparable(snapshot(client))
    assert partial != clean, "the command finished before it was killed: nothing was tested"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed from threads:" in rerun.stdout
    assert _comparable(snapshot(client)) == clean
