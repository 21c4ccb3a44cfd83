"""Shutdown: ordered (/ready answers 503 through the drain, the listener closes last) and
bounded (a frozen store cannot hold the process past 30 s; what was not flushed stays in the
journal, and the log says how much)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.firestore_emulator import FirestoreEmulator
from tests.http.fakes import Reply, fetch
from tests.spine.harness import dump, running, settings_for, settle
from wadaemon.daemon import Daemon, fixed_transports
from wadaemon.domain import AccountDoc
from wadaemon.store.contract import Store, StoreUnavailable
from wadaemon.store.runner import StoreRunner
from wadaemon.store.sqlite import SqliteStore
from wadaemon.whatsapp.simphone import SimPhone

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "acct"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HeldStore:
    """A real store whose account-document writes block while ``hold`` is set (until
    ``release``): the status writer's final flush then keeps the drain going."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.hold = False
        self.held = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def update_account(self, account_id: str, patch: AccountDoc) -> None:
        if self.hold:
            self.held.set()
            self.release.wait(30)
        self._inner.update_account(account_id, patch)


async def test_abandon_ends_calls_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def frozen() -> str:
        entered.set()
        release.wait(30)
        return "late"

    runner = StoreRunner(SqliteStore(tmp_path / "s.sqlite"))
    outcome: list[BaseException] = []
    caller = trio.CancelScope()

    async def call() -> None:
        with caller:
            try:
                await runner.write(ACCOUNT, frozen)
            except StoreUnavailable as exc:
                outcome.append(exc)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.to_thread.run_sync(entered.wait, 10)
            caller.cancel()  # an ordinary cancellation waits for the call...
            await trio.testing.wait_all_tasks_blocked()
            assert not outcome
            assert runner.abandon() == 1  # ...abandon ends it
    finally:
        release.set()
    assert len(outcome) == 1
    with pytest.raises(StoreUnavailable, match="stopping"):
        await runner.read(lambda: "never runs")


class GatedStore:
    """A real store whose message writes wait at a gate the test opens."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def upsert_messages(self, docs: Any) -> Any:
        self.waiting.set()
        self.gate.wait(30)
        return self._inner.upsert_messages(docs)


async def test_a_graceful_stop_commits_everything_the_socket_handed_over(tmp_path: Path) -> None:
    """Stopping an account under a lease still held (a hand-over, SIGTERM) stops the socket,
    then commits what it had journaled, then the subtree: nothing is left in the journal for
    the next owner to recover from the phone. (Before, the subtree was cancelled at once and
    the events not yet read from the journal stayed there.)"""
    store = GatedStore(SqliteStore(tmp_path / "s.sqlite"))
    phone = SimPhone(ACCOUNT, seed=5, chats=6, history_messages=300, chunk_size=25)
    async with running(settings_for(tmp_path / "data"), store, {ACCOUNT: phone}) as daemon:  # type: ignore[arg-type]
        await trio.to_thread.run_sync(store.waiting.wait, 30)
        assert await trio.to_thread.run_sync(phone.wait_idle, 30.0)  # everything is journaled
        runtime = daemon.accounts[ACCOUNT]
        assert runtime.journal.backlog() > 1  # the first chunk waits at the gate, the rest unread
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.stop_account, ACCOUNT)
            await trio.testing.wait_all_tasks_blocked()
            store.gate.set()
        assert daemon._left[ACCOUNT] == 0
    stored = {doc.id for _, docs in dump(store._inner, ACCOUNT).values() for doc in docs}
    assert stored == {mid for _, mid, _, _, origin in phone.holdings() if origin == "pairing"}
    store._inner.close()


def ready(port: int) -> Reply | None:
    try:
        return fetch(port, "/ready", timeout=2.0)
    except OSError:
        return None


async def test_ready_answers_503_through_the_drain_and_the_listener_closes_last(tmp_path: Path) -> None:
    port = free_port()
    store = HeldStore(SqliteStore(tmp_path / "store.sqlite"))
    phone = SimPhone(ACCOUNT, seed=3, chats=4, history_messages=60, chunk_size=30)
    daemon = Daemon(settings_for(tmp_path / "data", PORT=str(port)), store, [ACCOUNT],
                    fixed_transports({ACCOUNT: phone}))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            await settle(daemon, [phone])
            reply = await trio.to_thread.run_sync(ready, port)
            assert reply is not None and reply.status == 200
            store.hold = True
            daemon.accounts[ACCOUNT].ctx.status_writer.post(AccountDoc(state="disconnected"))
            daemon.stop()
            await trio.to_thread.run_sync(store.held.wait, 10)
            draining = await trio.to_thread.run_sync(ready, port)
            assert draining is not None, "the listener closed before the drain ended"
            assert draining.status == 503
            assert draining.json["mode"] == "stopping"
            store.release.set()
    finally:
        store.release.set()
    assert await trio.to_thread.run_sync(ready, port) is None  # closed once stopped
    store._inner.close()


def _diag(port: int) -> dict[str, Any] | None:
    try:
        reply = fetch(port, "/diag", timeout=5.0)
    except OSError:
        return None
    return reply.json if reply.status == 200 else None


@pytest.mark.slow
@pytest.mark.firestore
def test_sigterm_with_the_store_frozen_exits_within_30s(firestore_emulator: FirestoreEmulator,
                                                        tmp_path: Path) -> None:
    """A real daemon process on the emulator, mid-ingest; the emulator is frozen (SIGSTOP: every
    RPC hangs until its deadline), then the daemon gets SIGTERM."""
    firestore_emulator.ensure_running()
    firestore_emulator.reset()
    port = free_port()
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": firestore_emulator.hostport,
           "FIRESTORE_PROJECT": firestore_emulator.project, "WADAEMON_DATA_DIR": str(tmp_path / "data"),
           "WADAEMON_ACCOUNTS": "shop-a,shop-b", "PORT": str(port), "INSTANCE_ID": "frozen-1"}
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        child = subprocess.Popen([sys.executable, "-m", "tests.spine.sim_daemon", "6000"],
                                 cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:  # ingesting: some history saved
            body = _diag(port)
            if body and any(a["history"]["saved"] for a in body["accounts"]):
                break
            assert child.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        firestore_emulator.pause()
        while True:  # the phones keep delivering into the journals, nothing drains
            body = _diag(port)
            if body and sum(a["journalBacklog"] for a in body["accounts"]) > 0:
                break
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        draining = ready(port)
        while draining is not None and draining.status == 200 and time.monotonic() < started + 5:
            time.sleep(0.05)  # the signal is not handled yet
            draining = ready(port)
        child.wait(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        firestore_emulator.resume()
    log = log_path.read_text()
    print(f"\nSIGTERM with the store frozen: the daemon exited after {elapsed:.1f} s")
    assert child.returncode == 0, log[-3000:]
    assert elapsed < 30, log[-3000:]
    assert draining is not None and draining.status == 503
    left = re.search(r"wadaemon stopped journalEntriesLeft=(\d+)", log)
    assert left is not None, log[-3000:]
    assert int(left.group(1)) > 0
