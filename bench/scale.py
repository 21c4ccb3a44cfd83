"""Scale: many paired accounts idle in one instance; CPU while idle and memory per account.

``python -m bench.scale`` (a child of ``python -m bench``): ``--accounts`` simulated phones,
paired, connected, with no traffic, on the emulator. Idle CPU is this process's CPU time
(all threads) over ``--idle`` seconds once every account is up and drained; memory per
account is the RSS growth from before the accounts existed to then, divided by their number
(it includes the simulated phones' own objects and threads, so it is an upper bound).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.harness import cpu_seconds, emit, emulator_store, quiet_logs, rss_kb
from tests.spine.harness import running, settings_for, settle
from wadaemon.store.contract import Store
from wadaemon.whatsapp.simphone import SimPhone


async def _run(store: Store, phones: list[SimPhone], idle_s: float, data: Path) -> dict[str, float]:
    started = time.perf_counter()
    async with running(settings_for(data), store, {p.account_id: p for p in phones}) as daemon:
        await settle(daemon, phones)
        up_s = time.perf_counter() - started
        await trio.sleep(1)  # let the status writers' first writes pass before the idle window
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        await trio.sleep(idle_s)  # the idle window being measured, not synchronisation
        cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
        rss = rss_kb("VmRSS")
    return {"startup_s": up_s, "idle_cpu_percent": 100 * cpu / wall, "rss_kb": rss}


def measure(accounts: int, idle_s: float) -> dict[str, Any]:
    store = emulator_store()
    store.ping()
    with tempfile.TemporaryDirectory() as tmp:
        base_kb = rss_kb("VmRSS")
        phones = [SimPhone(f"idle{i:03d}", seed=i, chats=5, history_messages=0, paired=True) for i in range(accounts)]
        result = trio.run(_run, store, phones, idle_s, Path(tmp))
    store.close()
    return {
        "accounts": accounts, "idle_s": idle_s, "startup_s": result["startup_s"],
        "idle_cpu_percent": result["idle_cpu_percent"],
        "base_rss_mb": base_kb / 1024, "rss_mb": result["rss_kb"] / 1024,
        "rss_per_account_kb": (result["rss_kb"] - base_kb) / accounts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--idle", type=float, default=30, help="seconds of idle measured")
    args = parser.parse_args()
    quiet_logs()
    emit(measure(args.accounts, args.idle))


if __name__ == "__main__":
    main()
