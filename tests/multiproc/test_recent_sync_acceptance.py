"""The operator runbook's acceptance test for recent-sync, with real processes: "If the backend
was down 2 minutes, restart it -> recent-sync fills the gap within 1-2 ticks."

Compressed time: recent-sync ticks every few seconds instead of two minutes; the simulated
phone's live messages carry wall-clock timestamps (as WhatsApp's do), so the gap the daemon
records (its heartbeat before the crash .. its reconnect) is in the same time as the messages.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.procs import DaemonSet, SimServer, wait_until

ACC = "sim-1"
TICK_S = 4.0
ENV = {
    "RECENT_SYNC_INTERVAL_MS": str(int(TICK_S * 1000)),
    "RECENT_SYNC_MAX_MESSAGES_PER_THREAD": "200",
    "WHATSAPP_HISTORY_REQUEST_PACE_MS": "0",
    "WHATSAPP_HISTORY_REQUEST_TIMEOUT_MS": "3000",
    "WHATSAPP_AUTO_BACKFILL_ENABLED": "false",  # only recent-sync asks the phone here
}


@pytest.mark.slow
def test_daemon_killed_traffic_continues_queue_partly_dropped_restart_fills_the_gap(
        simserver: Callable[..., SimServer], daemons: DaemonSet) -> None:
    sim = simserver(accounts=1, chats=4, history=20, wall_clock=1)
    daemon = daemons.start("inst-a", sim, env=ENV)
    wait_until(lambda: daemons.message_ids(ACC) == sim.truth(ACC).ids(), "pairing history stored",
               logs=daemons.logs())
    sim.traffic(ACC, rate=20, outbound=0.2, receipts=0.0, edits=0.0, reactions=0.0)
    wait_until(lambda: len(daemons.message_ids(ACC)) >= 60, "live traffic is stored", logs=daemons.logs())

    daemon.kill()  # SIGKILL: no goodbye, no last heartbeat
    wait_until(lambda: sim.summary(ACC).connected_client is None, "the service saw the crash")
    wait_until(lambda: sim.summary(ACC).held >= 40, "traffic continues while the daemon is down")
    dropped = sim.drop_queue(ACC)  # the service loses part of the offline queue ...
    assert dropped >= 40
    wait_until(lambda: sim.summary(ACC).held >= 20, "... and queues more afterwards")

    restarted = daemons.start("inst-a", sim, env=ENV)  # the same data dir: a restart
    wait_until(lambda: sim.summary(ACC).connected_client == "inst-a", "reconnected", logs=daemons.logs())
    sim.stop_traffic(ACC)
    for chat in range(4):  # every chat active after the gap, so every chat can be anchored
        sim.inject(ACC, chat=chat, text=f"after the gap {chat}")

    def all_stored() -> bool:
        missing = sim.truth(ACC).ids() - daemons.message_ids(ACC)
        return not missing

    def working_ticks() -> list[str]:
        """The recent-sync ticks that found work (the others found every thread checked)."""
        return [line for line in restarted.log.read_text().splitlines()
                if "[recent-sync] accountId=sim-1 end" in line and "threads=0 " not in line]

    wait_until(lambda: all_stored() and bool(working_ticks()), "every message the phone holds is in the store",
               timeout=120, logs=daemons.logs())
    assert len(working_ticks()) <= 2, working_ticks()  # within two recent-sync ticks
    stored = daemons.messages(ACC)
    assert set(stored) == sim.truth(ACC).ids()
    # Exactly once: one document per message id, in one thread.
    assert max(daemons.message_counts(ACC).values()) == 1
    # The dropped ones never reached the device: only recent-sync's requests brought them.
    assert sum(doc.sync_source == "recent_sync" for _, doc in stored.values()) >= dropped
    assert restarted.alive()
    account = daemons.store().get_account(ACC)
    assert account is not None and account.last_recent_sync_result is not None
    assert account.last_recent_sync_result.ok and [g.reason for g in account.sync_gaps or []] == ["restart"]
