"""Faults: a store outage mid-ingest, a replayed capture, a SIGKILL mid-history. Each must end
in the same final state as the undisturbed run: nothing lost, nothing duplicated."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from tests.spine.harness import dump, running, settings_for, settle
from wadaemon.cli import main as cli_main
from wadaemon.journal import Journal
from wadaemon.store.contract import Store, StoreUnavailable
from wadaemon.store.sqlite import SqliteStore
from wadaemon.whatsapp.capture import encode_capture_line
from wadaemon.whatsapp.simphone import SimPhone

ACCOUNT = "acct"
VOLATILE = {"createdAt", "updatedAt", "tsServer", "syncedAt", "deliveredAt", "readAt"}


def comparable(store: Store) -> dict[str, Any]:
    """The account's threads and messages without the stamps that record *when* we wrote."""
    out: dict[str, Any] = {}
    for tid, (thread, messages) in dump(store, ACCOUNT).items():
        t = {k: v for k, v in msgspec.to_builtins(thread).items() if k not in VOLATILE}
        out[tid] = (t, [{k: v for k, v in msgspec.to_builtins(m).items() if k not in VOLATILE} for m in messages])
    return out


class FlakyStore:
    """A store that fails every other write with StoreUnavailable, ``failures`` times in all."""

    def __init__(self, inner: Store, failures: int) -> None:
        self._inner = inner
        self.failures_left = failures
        self.calls = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in ("upsert_messages", "advance_threads", "apply_receipts", "apply_mutations", "update_account"):
            return attr

        def flaky(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls += 1
                fail = self.failures_left > 0 and self.calls % 2 == 0
                if fail:
                    self.failures_left -= 1
            if fail:
                raise StoreUnavailable("injected outage")
            return attr(*args, **kwargs)

        return flaky


def traffic(phone: SimPhone) -> None:
    chat = phone.chats_of("pn")[0]
    sent = phone.emit_outbound(chat, "from the phone")
    phone.emit_receipt(chat, [sent], "read")
    for n in range(20):
        phone.emit_inbound(None, f"live {n}")


async def test_store_outage_mid_ingest_loses_and_duplicates_nothing(store: Store, tmp_path: Path) -> None:
    reference = SqliteStore(tmp_path / "reference.sqlite")
    clean = SimPhone(ACCOUNT, seed=21, chats=12, history_messages=900, chunk_size=100)
    async with running(settings_for(tmp_path / "clean"), reference, {ACCOUNT: clean}) as daemon:
        await settle(daemon, [clean])
        traffic(clean)
        await settle(daemon, [clean])

    flaky = FlakyStore(store, failures=25)
    phone = SimPhone(ACCOUNT, seed=21, chats=12, history_messages=900, chunk_size=100)
    async with running(settings_for(tmp_path / "flaky"), flaky, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
        traffic(phone)
        await settle(daemon, [phone])
    assert flaky.failures_left == 0, "the outage was not exercised"
    assert comparable(store) == comparable(reference)
    reference.close()


def write_capture(path: Path, phone: SimPhone) -> int:
    lines = [encode_capture_line(raw) for raw in phone.pairing_history()]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("firestore", marks=pytest.mark.firestore)])
def test_replaying_a_capture_twice_changes_nothing(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "capture.jsonl"
    write_capture(capture, SimPhone(ACCOUNT, seed=4, chats=10, history_messages=500, chunk_size=80))
    monkeypatch.setenv("WADAEMON_DATA_DIR", str(tmp_path / "data"))
    if backend == "firestore":
        store: Store = request.getfixturevalue("firestore_store")
        monkeypatch.setenv("FIRESTORE_PROJECT", request.getfixturevalue("firestore_emulator").project)
    else:  # the emulator fixture sets FIRESTORE_EMULATOR_HOST session-wide once it runs
        monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    assert cli_main(["replay", ACCOUNT, str(capture)]) == 0
    first_out = capsys.readouterr().out
    if backend == "sqlite":
        store = SqliteStore(tmp_path / "data" / "wadaemon.sqlite")
    first = msgspec.to_builtins(dump(store, ACCOUNT))
    assert sum(len(m) for _, m in first.values()) == 500
    assert cli_main(["replay", ACCOUNT, str(capture)]) == 0
    second = msgspec.to_builtins(dump(store, ACCOUNT))
    assert second == first  # updatedAt included: the replay wrote nothing
    assert '"historySaved":500' in first_out.replace(" ", "")
    assert '"historySaved":0' in capsys.readouterr().out.replace(" ", "")


def test_a_bad_capture_line_is_reported_and_the_rest_lands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "capture.jsonl"
    count = write_capture(capture, SimPhone(ACCOUNT, seed=4, chats=5, history_messages=100, chunk_size=30))
    lines = capture.read_text().splitlines()
    lines.insert(2, '{"event": "Message", "data": "%%% not base64"}')
    capture.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("WADAEMON_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    assert cli_main(["replay", ACCOUNT, str(capture)]) == 1
    captured = capsys.readouterr()
    assert f"{capture}:3: skipped" in captured.err
    assert f'"delivered":{count}' in captured.out.replace(" ", "")
    store = SqliteStore(tmp_path / "data" / "wadaemon.sqlite")
    assert sum(len(m) for _, m in dump(store, ACCOUNT).values()) == 100


CHILD = textwrap.dedent("""
    import sys, time, trio
    from pathlib import Path
    from tests.spine.harness import running, settings_for
    from wadaemon.store.firestore import FirestoreStore
    from wadaemon.store.sqlite import SqliteStore
    from wadaemon.whatsapp.simphone import SimPhone

    base = FirestoreStore if sys.argv[2] == "firestore" else SqliteStore

    class SlowStore(base):
        def upsert_messages(self, docs):
            time.sleep(0.05)  # keeps the pipeline behind the phone, so the kill lands mid-history
            return super().upsert_messages(docs)

    async def main():
        data = Path(sys.argv[1])
        phone = SimPhone("acct", seed=9, chats=20, history_messages=3000, chunk_size=100)
        if sys.argv[2] == "firestore":
            store = SlowStore.from_settings(project=sys.argv[3], service_account_json=None,
                                            credentials_path=None, emulator_host=sys.argv[4])
        else:
            store = SlowStore(data / "wadaemon.sqlite")
        async with running(settings_for(data), store, {"acct": phone}):
            await trio.to_thread.run_sync(phone.wait_idle, 60.0)
            print("DELIVERED", flush=True)
            await trio.sleep_forever()
    trio.run(main)
""")


async def test_sigkill_mid_history_then_restart_gives_the_same_state(store: Store, tmp_path: Path,
                                                                    request: pytest.FixtureRequest) -> None:
    data = tmp_path / "data"
    data.mkdir()
    args = [sys.executable, "-c", CHILD, str(data), store.backend]
    if store.backend == "firestore":
        emulator = request.getfixturevalue("firestore_emulator")
        args += [emulator.project, emulator.hostport]
    else:
        store = SqliteStore(data / "wadaemon.sqlite")
    child = await trio.lowlevel.open_process(args,
                                             stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    assert child.stdout is not None
    output = b""
    with trio.fail_after(120):
        while b"\n" not in output:
            chunk = await child.stdout.receive_some()
            assert chunk, "the child exited before delivering"
            output += chunk
    child.send_signal(signal.SIGKILL)
    await child.wait()
    assert output.split(b"\n")[0].strip() == b"DELIVERED"
    journal = Journal(data / "journal" / f"{ACCOUNT}.sqlite", max_backlog=100_000)
    left = journal.backlog()
    journal.close()
    assert left > 0, "the kill did not land mid-history"

    phone = SimPhone(ACCOUNT, seed=9, chats=20, history_messages=3000, chunk_size=100, paired=True)
    async with running(settings_for(data), store, {ACCOUNT: phone}) as daemon:
        await settle(daemon, [phone])
    reference = SqliteStore(tmp_path / "reference.sqlite")
    clean = SimPhone(ACCOUNT, seed=9, chats=20, history_messages=3000, chunk_size=100)
    async with running(settings_for(tmp_path / "clean"), reference, {ACCOUNT: clean}) as daemon:
        await settle(daemon, [clean])
    assert sum(len(m) for _, (_, m) in dump(store, ACCOUNT).items()) == 3000
    assert comparable(store) == comparable(reference)


async def test_a_capture_that_cannot_be_written_loses_no_event(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The capture file is a symlink to /dev/full: every capture write fails with ENOSPC. The
    journal comes first, so every message still lands; the failures are counted and logged once."""
    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / f"{ACCOUNT}.jsonl").symlink_to("/dev/full")
    store = SqliteStore(tmp_path / "store.sqlite")
    phone = SimPhone(ACCOUNT, seed=5, chats=6, history_messages=300, chunk_size=50)
    settings = settings_for(tmp_path / "data", WADAEMON_CAPTURE_DIR=str(captures))
    with caplog.at_level("WARNING", logger="wadaemon.capture"):
        async with running(settings, store, {ACCOUNT: phone}) as daemon:
            await settle(daemon, [phone])
            traffic(phone)
            await settle(daemon, [phone])
            status = daemon.board.snapshot().accounts[0]
            runtime = daemon.accounts[ACCOUNT]
    assert sum(len(m) for _, m in dump(store, ACCOUNT).values()) == 300 + 21
    assert status.capture_errors >= 300 // 50 + 21  # every event: history chunks and live ones
    assert len([r for r in caplog.records if r.name == "wadaemon.capture"]) == 1
    assert runtime.sink._capture is not None and runtime.sink._capture.closed
    store.close()
