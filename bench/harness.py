"""What the benchmarks share: the emulator, writes counted at commit, RSS/CPU readings, and
child processes (each measurement that reads memory or CPU runs in a fresh interpreter, so
one run's allocations never show in another's figures)."""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.firestore_emulator import FirestoreEmulator, _locate  # noqa: E402
from wadaemon.store.firestore import FirestoreStore  # noqa: E402

EMULATOR_HEAP = "3g"


def start_emulator() -> FirestoreEmulator:
    java, jar = _locate()
    emulator = FirestoreEmulator(java, jar, heap=EMULATOR_HEAP)
    emulator.start()
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.hostport
    os.environ["WADAEMON_BENCH_PROJECT"] = emulator.project
    return emulator


def emulator_store() -> FirestoreStore:
    """A store on the emulator named by the environment (set by ``start_emulator``)."""
    host = os.environ["FIRESTORE_EMULATOR_HOST"]
    project = os.environ.get("WADAEMON_BENCH_PROJECT", "wadaemon-test")
    return FirestoreStore.from_settings(project=project, service_account_json=None,
                                        credentials_path=None, emulator_host=host)


def _kind(write: Any) -> str:
    """What one raw ``Write`` touches: ``message+`` (a created message), ``message`` (an update),
    ``thread``, ``account`` or ``other`` (leases, deletes)."""
    if write.HasField("delete"):
        return "other"
    parts = write.update.name.split("/documents/", 1)[-1].split("/")
    if parts[0] == "threads" and len(parts) == 4:
        created = write.HasField("current_document") and write.current_document.HasField("exists")
        return "message+" if created else "message"
    if parts[0] == "threads" and len(parts) == 2:
        return "thread"
    if parts[0] == "accounts":
        return "account"
    return "other"


class CommitCounter:
    """Writes counted at commit, by kind, by wrapping the stock ``WriteBatch.commit`` (every
    write of the store goes through it). Only commits that succeeded count as writes; refused
    ones (a create that found its document) are counted apart."""

    def __init__(self) -> None:
        from google.cloud.firestore_v1.batch import WriteBatch

        self.writes: Counter[str] = Counter()
        self.commits = 0
        self.refused_writes = 0
        self._lock = threading.Lock()
        original = WriteBatch.commit
        counter = self

        def commit(batch: Any, *args: Any, **kwargs: Any) -> Any:
            kinds = Counter(_kind(pb) for pb in batch._write_pbs)
            try:
                result = original(batch, *args, **kwargs)
            except Exception:
                with counter._lock:
                    counter.refused_writes += sum(kinds.values())
                raise
            with counter._lock:
                counter.writes.update(kinds)
                counter.commits += 1
            return result

        WriteBatch.commit = commit

    def total(self) -> int:
        return sum(self.writes.values())


def rss_kb(field: str = "VmRSS") -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def quiet_logs() -> None:
    """Log at the daemon's production level (INFO: formatting costs what it costs in
    production), into /dev/null so a child's stdout stays its answer."""
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))  # noqa: SIM115


def emit(result: dict[str, Any]) -> None:
    """A child's answer: one JSON line on stdout (logs go to stderr)."""
    print(json.dumps(result), flush=True)


def run_child(module: str, *args: str, timeout: float = 900) -> dict[str, Any]:
    """``python -m module args`` in a fresh interpreter; its last stdout line, parsed."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result
