"""One SIGINT or SIGTERM ends ``wadaemon demo`` and ``wadaemon replay`` within seconds (real
processes); the demo's report survives a store outage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.firestore_emulator import FirestoreEmulator
from tests.spine.harness import settings_for
from tests.spine.test_faults import write_capture
from tests.spine.test_shutdown import free_port
from wadaemon.daemon import Daemon
from wadaemon.demo import _report
from wadaemon.journal import Journal
from wadaemon.store.contract import Store, StoreUnavailable
from wadaemon.store.sqlite import SqliteStore
from wadaemon.whatsapp.simphone import SimPhone

REPO = Path(__file__).resolve().parents[2]
WADAEMON = Path(sys.executable).parent / "wadaemon"


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIRESTORE", "GOOGLE", "WADAEMON_"))}
    return {**env, "WADAEMON_DATA_DIR": str(tmp_path / "data"), "INSTANCE_ID": "int-1", **extra}


def wait_for_line(path: Path, text: str, child: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert child.poll() is None, path.read_text()[-3000:]
        assert time.monotonic() < deadline, path.read_text()[-3000:]
        time.sleep(0.1)


def stop_time(child: subprocess.Popen[bytes], signum: int, timeout: float) -> float:
    started = time.monotonic()
    child.send_signal(signum)
    child.wait(timeout=timeout)
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_stops_on_one_signal(signum: int, tmp_path: Path) -> None:
    out = tmp_path / "demo.log"
    with out.open("wb") as sink:
        child = subprocess.Popen([str(WADAEMON), "demo", "--messages", "600"], cwd=tmp_path,
                                 env=clean_env(tmp_path, PORT=str(free_port())),
                                 stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for_line(out, "[demo] demo-1", child, 60)  # the report loop is running
        elapsed = stop_time(child, signum, 15)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, out.read_text()[-3000:]
    assert elapsed < 10, out.read_text()[-3000:]
    assert "wadaemon stopped" in out.read_text()


class DownStore:
    """A real store whose reads fail as in an outage; ``failed`` counts the failed reads."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.failed = 0
        self.third_failure = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def list_threads(self, *args: Any, **kwargs: Any) -> Any:
        self.failed += 1
        if self.failed == 3:  # called in a store worker thread
            trio.from_thread.run_sync(self.third_failure.set)
        raise StoreUnavailable("injected outage")


async def test_demo_report_survives_a_store_outage(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("wadaemon.demo.REPORT_EVERY_S", 0.0)
    store = DownStore(SqliteStore(tmp_path / "s.sqlite"))
    daemon = Daemon(settings_for(tmp_path / "data"), store, ["acct"],
                    lambda a, _: SimPhone(a), serve=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_report, daemon)  # before the fix: StoreUnavailable ends the test here
        with trio.fail_after(10):
            await store.third_failure.wait()
        nursery.cancel_scope.cancel()
    lines = [line for line in capsys.readouterr().out.splitlines() if "store unavailable" in line]
    assert len(lines) >= 3
    for runtime in daemon.accounts.values():
        runtime.close()


@pytest.mark.slow
@pytest.mark.firestore
def test_replay_stops_on_one_signal_with_the_store_frozen(firestore_emulator: FirestoreEmulator,
                                                          tmp_path: Path) -> None:
    """Without the signal the replay would wait for the frozen store forever."""
    firestore_emulator.ensure_running()
    firestore_emulator.reset()
    capture = tmp_path / "capture.jsonl"
    write_capture(capture, SimPhone("acct", seed=2, chats=10, history_messages=2000, chunk_size=100))
    out = tmp_path / "replay.log"
    env = clean_env(tmp_path, FIRESTORE_EMULATOR_HOST=firestore_emulator.hostport,
                    FIRESTORE_PROJECT=firestore_emulator.project)
    firestore_emulator.pause()
    try:
        with out.open("wb") as sink:
            child = subprocess.Popen([str(WADAEMON), "replay", "acct", str(capture)], cwd=REPO, env=env,
                                     stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_for_line(out, "wadaemon ready", child, 60)
            elapsed = stop_time(child, signal.SIGINT, 40)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    finally:
        firestore_emulator.resume()
    log = out.read_text()
    assert elapsed < 20, log[-3000:]
    journal_file = tmp_path / "data" / "journal" / "acct.sqlite"
    if child.returncode == 2:
        # The store was frozen before the account's ownership lease could be taken: the replay
        # says so and stops at once, having read nothing from the capture file.
        assert "or the store did not answer" in log, log[-3000:]
        assert not journal_file.exists() or Journal(journal_file, max_backlog=100_000).backlog() == 0
        return
    assert child.returncode == 130, log[-3000:]
    assert "interrupted before the journal was drained" in log
    journal = Journal(journal_file, max_backlog=100_000)
    try:
        assert journal.backlog() > 0
    finally:
        journal.close()
