"""One adoption measurement in a fresh process: ``python -m bench.adopt --mode scan|apply``.

Writes the generated legacy database (``tests.legacy.generator.bulk``) into the emulator named
by the environment, then adopts every account: ``scan`` plans every fix and writes nothing
(the dry run), ``apply`` writes them. Prints one JSON line: documents scanned per second,
writes, writes per fixed document, peak RSS above the process's size before adoption.
"""

from __future__ import annotations

import argparse
import time

from bench.harness import emit, emulator_store, quiet_logs, rss_kb
from tests.legacy import generator
from wadaemon.adopt.runner import Adopter
from wadaemon.store.legacy import LegacyFirestore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("scan", "apply"), required=True)
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--messages", type=int, default=40)
    args = parser.parse_args()
    quiet_logs()
    store = emulator_store()
    generator.write(store.client, dict(generator.bulk(args.accounts, args.threads, args.messages)))
    legacy = LegacyFirestore(store)
    adopter = Adopter(legacy, apply=args.mode == "apply", rate=0)
    accounts = legacy.account_ids()
    base_kb = rss_kb("VmRSS")
    started = time.perf_counter()
    reports = [adopter.adopt_account(account) for account in accounts]
    seconds = time.perf_counter() - started
    scanned = sum(r.threads_scanned + r.messages_scanned for r in reports)
    fixed = sum(n for r in reports for kind, n in r.fixes.items() if kind != "skipped_thread")
    writes = sum(r.writes for r in reports)
    emit({
        "mode": args.mode, "accounts": len(accounts), "documents": scanned, "seconds": seconds,
        "docs_per_s": scanned / seconds, "fixes": fixed, "writes": writes,
        "writes_per_fix": writes / max(fixed, 1), "reads": legacy.reads,
        "peak_rss_delta_mb": (rss_kb("VmHWM") - base_kb) / 1024,
    })
    store.close()


if __name__ == "__main__":
    main()
