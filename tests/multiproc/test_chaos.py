"""The chaos scenario: three ``wadaemon run`` processes on the Firestore emulator share 30
accounts of the simulated WhatsApp service, with live traffic on every account the whole time.
One instance is SIGKILLed, one SIGSTOPped for longer than the lease and then SIGCONTed, one
SIGTERMed and restarted.

Asserted, from the service's ground truth and the store:

* the service counted **zero** replaced streams: no two connections for one account at once.
  The frozen instance's connections are closed by the service (``--ack-timeout``: an event it
  cannot ack), and on resume it does not reconnect an account whose lease it lost
  (``SimServerTransport``'s licence);
* every account of a dead owner connected again from another instance within lease + 5 s of
  the signal (SIGTERM: within 5 s of the stopping instance's close);
* every message the service delivered is in the store, exactly once (one document per id) —
  including what an instance had journaled and not committed when it was killed, frozen or
  stopped and never ran the account again: the new owners' recent-sync fills that gap from the
  phone, once a later message in the chat gives it an anchor;
* no ``whatsapp_account_leases`` epoch ever named two holders (``EpochWatch``).

The measured figures are printed (``-s`` shows them). Times are taken *before* each signal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster.watch import LEASE_S, TIMING, EpochWatch, now_ms
from tests.firestore_emulator import FirestoreEmulator
from tests.procs import DaemonProc, DaemonSet, SimServer, wait_until
from wadaemon.store.firestore import FirestoreStore
from wadaemon.whatsapp.simserver import GroundTruth

pytestmark = [pytest.mark.slow, pytest.mark.firestore]

ACCOUNTS = 30
CHATS = 3
#: Each account gets an event a second, so a frozen connection has an event in flight within
#: a second; unacked for 1.5 s it is closed, well before a successor may connect (the lease
#: has then 6 s - one retry period - 2.5 s left at the least).
SERVICE = {"accounts": ACCOUNTS, "chats": CHATS, "history": 6, "rate": 1, "wall_clock": 1, "ack_timeout": 1.5}
ENV = {
    **TIMING,
    "RECENT_SYNC_INTERVAL_MS": "3000",  # the gap filler closes a crash's gap within seconds
    "RECENT_SYNC_MAX_MESSAGES_PER_THREAD": "500",
    "RECENT_SYNC_MAX_CONCURRENCY": "4",
    "RECENT_SYNC_LEASE_MS": "15000",  # a killed instance's recent-sync lease must not outlive the test
    "WHATSAPP_HISTORY_REQUEST_PACE_MS": "0",
    "WHATSAPP_HISTORY_REQUEST_TIMEOUT_MS": "3000",
    "WHATSAPP_AUTO_BACKFILL_ENABLED": "false",
}


def owners(sim: SimServer) -> dict[str, str | None]:
    """account -> the client connected for it now (None: nobody)."""
    return {account: summary.connected_client for account, summary in sim.summaries().items()}


def held_by(sim: SimServer, name: str) -> set[str]:
    return {account for account, client in owners(sim).items() if client == name}


def all_run_on(sim: SimServer, accounts: set[str], among: set[str]) -> Callable[[], bool]:
    def check() -> bool:
        now = owners(sim)
        return all(now[account] in among for account in accounts)
    return check


def reconnected(truths: dict[str, GroundTruth], accounts: set[str], since_ms: int, among: set[str]) -> dict[str, int]:
    """account -> when it first connected again from one of ``among`` at or after ``since_ms``."""
    return {account: min(c.connected_at_ms for c in truths[account].connections
                         if c.client in among and c.connected_at_ms >= since_ms) for account in accounts}


def closed_by(truths: dict[str, GroundTruth], accounts: set[str], client: str) -> dict[str, int]:
    """account -> when ``client``'s last connection for it closed."""
    return {account: max(c.closed_at_ms or 0 for c in truths[account].connections if c.client == client)
            for account in accounts}


def running_here(daemon: DaemonProc) -> set[str]:
    return {row["accountId"] for row in daemon.diag()["accounts"]}


def test_kill_freeze_and_term_with_live_traffic_lose_nothing_and_never_replace_a_stream(
        simserver: Callable[..., SimServer], firestore_emulator: FirestoreEmulator,
        firestore_store: FirestoreStore, tmp_path: Path) -> None:
    sim = simserver(**SERVICE)
    daemons = DaemonSet(tmp_path / "daemons", firestore=firestore_emulator)
    logs = [sim.log]
    figures: dict[str, float] = {}
    try:
        with EpochWatch(firestore_store).running() as epochs:
            a, b, c = (daemons.start(name, sim, env=ENV) for name in ("a", "b", "c"))
            logs += daemons.logs()
            wait_until(lambda: set(owners(sim).values()) == {"a", "b", "c"},
                       "the three instances share the accounts", 120, logs)

            # --- SIGKILL a: its accounts come back elsewhere once their leases expire.
            lost_a = held_by(sim, "a")
            killed = now_ms()
            a.kill()
            wait_until(all_run_on(sim, lost_a, {"b", "c"}), "a's accounts run on b and c", LEASE_S + 10, logs)

            # --- SIGSTOP b past its lease: c takes its accounts; b, resumed, drops them.
            frozen = held_by(sim, "b")
            assert frozen, f"b runs nothing to freeze: {owners(sim)}"
            stopped = now_ms()
            b.freeze()
            wait_until(all_run_on(sim, frozen, {"c"}), "b's accounts run on c", LEASE_S + 10, logs)
            time.sleep(max(0.0, LEASE_S + 2 - (now_ms() - stopped) / 1000))  # frozen past the lease
            resumed = now_ms()
            b.resume()
            wait_until(lambda: not running_here(b) & frozen, "b drops the accounts it lost", 15, logs)
            figures["sigstop_resume_to_dropped_s"] = (now_ms() - resumed) / 1000

            # --- SIGTERM c: it releases its leases; b takes its accounts over within seconds.
            wait_until(lambda: bool(held_by(sim, "b")), "b runs accounts again", 30, logs)
            handed = held_by(sim, "c")
            termed = now_ms()
            assert c.stop(timeout=40) == 0
            figures["sigterm_shutdown_s"] = (now_ms() - termed) / 1000
            wait_until(all_run_on(sim, handed, {"b"}), "c's accounts run on b", 15, logs)

            # --- c restarts (same data dir): it gets its share back by hand-over.
            daemons.start("c", sim, env=ENV)
            logs = [sim.log, *daemons.logs()]
            wait_until(lambda: bool(held_by(sim, "c")) and None not in owners(sim).values(),
                       "c runs its share again and every account runs", 60, logs)

            # --- the traffic stops; everything delivered must reach the store, exactly once.
            # One last message in every chat: what an instance had journaled last before it
            # died can only be asked for from an anchor newer than it (requests reach older).
            for account in sim.accounts:
                sim.stop_traffic(account)
                for chat in range(CHATS):
                    sim.inject(account, chat=chat, text="after the chaos")
            settled: set[str] = set()

            def all_stored() -> bool:
                for account in sorted(set(sim.accounts) - settled):
                    truth = sim.truth(account)
                    if truth.held or not truth.delivered_ids() <= daemons.message_ids(account):
                        return False
                    settled.add(account)
                return True

            try:
                wait_until(all_stored, "every delivered message is in the store", 90, logs)
            finally:
                truths = {account: sim.truth(account) for account in sim.accounts}
                counts = {account: daemons.message_counts(account) for account in sim.accounts}
                lost = {account: sorted(truths[account].delivered_ids() - set(counts[account]))
                        for account in sim.accounts}
                figures["delivered"] = sum(len(t.delivered_ids()) for t in truths.values())
                figures["lost"] = sum(map(len, lost.values()))
                figures["duplicated"] = sum(n > 1 for count in counts.values() for n in count.values())
                figures["replaced_streams"] = sum(t.replacements for t in truths.values())
                figures["epochs_checked"] = len(epochs.owners)
                print("\nchaos figures:", figures)
                for account, ids in lost.items():
                    for held in (m for m in truths[account].messages if m.id in ids):
                        print(f"lost: {account} {held}")
        after_kill = reconnected(truths, lost_a, killed, {"b", "c"})
        after_freeze = reconnected(truths, frozen, stopped, {"c"})
        after_term = reconnected(truths, handed, termed, {"b"})
        c_closed = closed_by(truths, handed, "c")
        figures["sigkill_failover_s"] = max(at - killed for at in after_kill.values()) / 1000
        figures["sigstop_failover_s"] = max(at - stopped for at in after_freeze.values()) / 1000
        figures["sigterm_failover_s"] = max(at - termed for at in after_term.values()) / 1000
        figures["sigterm_close_to_reconnect_s"] = max(after_term[x] - c_closed[x] for x in handed) / 1000
        print("chaos figures:", figures)
        assert figures["replaced_streams"] == 0, {a: t.replacements for a, t in truths.items() if t.replacements}
        assert figures["lost"] == 0, {a: ids for a, ids in lost.items() if ids}
        assert figures["duplicated"] == 0
        assert epochs.shared() == {}
        assert figures["sigkill_failover_s"] <= LEASE_S + 5
        assert figures["sigstop_failover_s"] <= LEASE_S + 5
        assert figures["sigterm_close_to_reconnect_s"] <= 5
    finally:
        daemons.cleanup()
