"""The simulated WhatsApp service against real `wadaemon run` processes: the store matches the
service's ground truth; a second daemon gets an account by hand-over, not by replacing the
stream; the offline queue and its gap."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.procs import DaemonSet, SimServer, free_port, wait_until
from wadaemon.cluster.share import Peer, preferred

pytestmark = pytest.mark.slow

ACC = "sim-1"
#: Short ownership leases, so hand-overs and take-overs happen within seconds.
FAST_LEASES = {"WADAEMON_ACCOUNT_LEASE_MS": "3000", "WADAEMON_ACCOUNT_RENEW_DEADLINE_MS": "2000",
               "WADAEMON_ACCOUNT_RETRY_PERIOD_MS": "500"}
#: For a gap that must stay open: no scheduler may ask the phone for history behind the test's back.
NO_HISTORY_REQUESTS = {"WHATSAPP_AUTO_BACKFILL_ENABLED": "false", "RECENT_SYNC_ENABLED": "false"}


def assert_store_matches_truth(daemons: DaemonSet, sim: SimServer, account: str) -> None:
    """Every message the phone holds and delivered is in the store, in its chat's thread, with
    its timestamp and direction; the store holds nothing else."""
    truth = sim.truth(account)
    stored = daemons.messages(account)
    delivered = [m for m in truth.messages if m.delivered_to]
    assert set(stored) == {m.id for m in delivered}
    for held in delivered:
        thread_jid, doc = stored[held.id]
        assert thread_jid in {held.chat, held.chat_pn} - {""}, (held, thread_jid)
        assert doc.ts_client_ms == held.ts_ms, held
        assert (doc.direction == "outbound") == held.from_me, held


def test_daemon_ingests_pairing_history_and_live_traffic_exactly(
        simserver: Callable[..., SimServer], daemons_any_store: DaemonSet) -> None:
    daemons = daemons_any_store
    sim = simserver(accounts=1, chats=8, history=160, chunk_size=40)
    daemon = daemons.start("inst-a", sim)
    daemon.wait_ready()
    sim.traffic(ACC, rate=200, count=150, edits=0.05, reactions=0.05)

    def settled() -> bool:
        truth = sim.truth(ACC)
        return (sim.summary(ACC).traffic_sent == 150 and truth.delivered_ids() == truth.ids()
                and daemons.message_ids(ACC) == truth.ids())

    wait_until(settled, "every held message is delivered and stored", logs=daemons.logs())
    truth = sim.truth(ACC)
    assert len(truth.ids("pairing")) == 160 and truth.ids("live")
    assert {m.delivered_to[0] for m in truth.messages} == {"inst-a"}
    assert_store_matches_truth(daemons, sim, ACC)
    assert truth.replacements == 0 and len(truth.connections) == 1
    assert daemon.account_state(ACC) == "connected"


def test_a_second_daemon_gets_the_account_by_hand_over_not_by_replacing_the_stream(
        simserver: Callable[..., SimServer], daemons: DaemonSet) -> None:
    """Two daemons on one store and one account: the ownership lease keeps the second off the
    account until the first hands it over (the second is preferred by fair share here), so the
    service counts no replacement, and the history is stored once."""
    sim = simserver(accounts=1, chats=4, history=40)
    first_id, second_id = "inst-a", next(name for name in (f"inst-b{i}" for i in range(50))
                                         if preferred(ACC, [Peer("inst-a", True), Peer(name, True)]) == name)
    first = daemons.start(first_id, sim, env=FAST_LEASES)
    wait_until(lambda: sim.summary(ACC).connected_client == first_id, "the first daemon is connected",
               logs=daemons.logs())
    second = daemons.start(second_id, sim, env=FAST_LEASES)
    wait_until(lambda: sim.summary(ACC).connected_client == second_id, "the second daemon took the account",
               logs=daemons.logs())
    truth = sim.truth(ACC)
    assert truth.replacements == 0
    assert [c.client for c in truth.connections] == [first_id, second_id]
    assert not truth.connections[0].reason.startswith("replaced")
    wait_until(lambda: first.account_state(ACC) == "", "the first daemon no longer runs the account",
               logs=daemons.logs())
    second.wait_ready()
    # The pairing history went out once, to whichever connection was first: nothing is lost.
    wait_until(lambda: daemons.message_ids(ACC) == truth.ids("pairing"), "the history is stored",
               logs=daemons.logs())


def test_offline_queue_delivers_on_reconnect_and_a_dropped_queue_leaves_a_gap(
        simserver: Callable[..., SimServer], daemons: DaemonSet) -> None:
    sim = simserver(accounts=1, chats=4, history=20)
    daemon = daemons.start("inst-a", sim, env=NO_HISTORY_REQUESTS)
    wait_until(lambda: daemons.message_ids(ACC) == sim.truth(ACC).ids(), "pairing history stored",
               logs=daemons.logs())

    daemon.kill()
    wait_until(lambda: sim.summary(ACC).connected_client is None, "the service saw the crash")
    queued = [sim.inject(ACC, chat=n % 4, text=f"while down {n}") for n in range(5)]
    assert sim.summary(ACC).held == 5
    daemon = daemons.start("inst-a", sim, env=NO_HISTORY_REQUESTS)  # the same data dir: a restart
    wait_until(lambda: set(queued) <= daemons.message_ids(ACC), "the offline queue is delivered",
               logs=daemons.logs())
    assert sim.summary(ACC).held == 0

    daemon.kill()
    wait_until(lambda: sim.summary(ACC).connected_client is None, "the service saw the crash")
    lost = [sim.inject(ACC, chat=n % 4, text=f"dropped {n}") for n in range(4)]
    assert sim.drop_queue(ACC) == 4
    daemons.start("inst-a", sim, env=NO_HISTORY_REQUESTS)
    wait_until(lambda: sim.summary(ACC).connected_client == "inst-a", "reconnected", logs=daemons.logs())
    after = sim.inject(ACC, chat=0, text="after the gap")
    wait_until(lambda: after in daemons.message_ids(ACC), "live traffic flows again", logs=daemons.logs())

    truth = sim.truth(ACC)
    gap = truth.ids() - truth.delivered_ids()
    assert gap == set(lost)  # on the phone, never delivered: only an on-demand request can close it
    assert not gap & daemons.message_ids(ACC)
    assert truth.dropped == 4 and truth.held == 0 and truth.history_requests == []
    assert_store_matches_truth(daemons, sim, ACC)


def test_daemon_reports_disconnected_and_reconnects_when_the_service_returns(
        simserver: Callable[..., SimServer], daemons: DaemonSet) -> None:
    sim = simserver(accounts=1, chats=2, history=4)
    daemon = daemons.start("inst-a", sim)
    daemon.wait_ready()
    wait_until(lambda: daemon.account_state(ACC) == "connected", "connected", logs=daemons.logs())
    address = sim.address
    sim.stop()
    wait_until(lambda: daemon.account_state(ACC) == "disconnected", "the daemon reports disconnected",
               logs=daemons.logs())
    again = simserver(listen=address, accounts=1, chats=2, history=4)
    wait_until(lambda: again.summary(ACC).connected_client == "inst-a", "the daemon reconnected",
               logs=daemons.logs())
    wait_until(lambda: daemon.account_state(ACC) == "connected", "the daemon reports connected",
               logs=daemons.logs())
    assert daemon.alive()


def test_run_without_accounts_and_no_service_says_why(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WADAEMON_", "FIRESTORE_"))}
    env.update(WADAEMON_SIMSERVER=f"127.0.0.1:{free_port()}", WADAEMON_DATA_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "wadaemon.cli", "run"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "cannot list the accounts of the simulated service" in done.stderr
