"""Real processes for multi-process tests: the simulated WhatsApp service and `wadaemon run`.

Anything between processes is proven with real processes here (SIGKILL, SIGSTOP, SIGTERM), so
a test reads like a scenario. The fixtures (``tests/multiproc/conftest.py``) are ``simserver``
(a factory: starts ``wadaemon simserver`` on a free loopback port) and ``daemons`` (a
``DaemonSet`` over one shared store)::

    def test_failover(simserver, daemons):
        sim = simserver(accounts=2, chats=6, history=120, pairing_history=5)
        a = daemons.start("inst-a", sim)                  # every account the service has
        b = daemons.start("inst-b", sim, accounts=["sim-1"], env={"RECENT_SYNC_ENABLED": "0"})
        a.wait_ready()
        sim.traffic("sim-1", rate=50, count=100)
        a.freeze(); a.resume(); a.kill(); b.stop()       # SIGSTOP, SIGCONT, SIGKILL, SIGTERM
        wait_until(lambda: daemons.message_ids("sim-1") == sim.truth("sim-1").delivered_ids(),
                   "the store holds exactly what was delivered")

What a ``SimServer`` offers: ``truth(account)`` (the ground truth, decoded into the service's
own ``GroundTruth`` Struct), ``summary(account)``, ``summaries()``, ``inject``, ``traffic`` / ``stop_traffic``,
``drop_queue``, ``phone(...)`` (history answers off, delay, failing sends), ``disconnect``;
each is one call of the control API (docs/simserver.md). ``DaemonSet.store()`` opens the shared
store from the test process; ``messages(account)`` reads every message document of an account,
``message_counts(account)`` how many documents each message id has.

The store: by default one SQLite file shared by every process. Each daemon has a data dir of its
own (journals are per process), in which ``wadaemon.sqlite`` is a symlink to the shared file —
SQLite resolves the link, so the WAL and the locks are shared too. With ``firestore=`` (the
``firestore_emulator`` fixture) every process uses the emulator instead.

Cleanup: every process is started in a session of its own and killed with its process group
when the fixture ends, frozen or not, passed or failed. Logs go to files under the test's
``tmp_path`` (``DaemonProc.log`` / ``SimServer.log``) and the last lines are printed when a
wait fails, so a failing scenario shows what the processes said.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from wadaemon.domain import MessageDoc, thread_id_for
from wadaemon.store.contract import Store
from wadaemon.whatsapp.simserver import AccountSummary, GroundTruth

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
LISTENING = re.compile(r"simserver listening on (\S+):(\d+) control (http://\S+) accounts=(\S+)")
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0,
               logs: Iterable[Path] = ()) -> None:
    """Poll ``condition`` until true (across real processes only); fail naming ``what``.

    A connection error inside ``condition`` (a process still starting, or busy on a loaded
    machine) counts as "not yet"; the last one is shown if the wait times out."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            if condition():
                return
        except OSError as exc:
            last_error = f" (last error: {exc!r})"
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {path.name} ---\n{tail(path)}" for path in logs)
            raise AssertionError(f"timed out after {timeout:g}s waiting until {what}{last_error}{tails}")
        time.sleep(0.05)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http(method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = None if body is None else msgspec.json.encode(body)
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with _opener.open(request, timeout=timeout) as response:
            return msgspec.json.decode(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {url} -> {exc.code}: {exc.read().decode(errors='replace')}") from None


class Proc:
    """A child process in a session of its own: signals go to its whole group."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path,
                 stdout: int | None = None) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("ab")
        self.popen = subprocess.Popen(argv, env=dict(env), stdin=subprocess.DEVNULL,
                                      stdout=stdout if stdout is not None else self._log_file,
                                      stderr=self._log_file, start_new_session=True)
        self.frozen = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def _signal(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye (a crash)."""
        self._signal(signal.SIGKILL)
        self.popen.wait(STOP_TIMEOUT_S)
        self.frozen = False

    def freeze(self) -> None:
        """SIGSTOP: alive but silent (a stuck VM); its sockets stay open."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.frozen = False

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait (a graceful stop); SIGKILL if it does not exit in time."""
        if self.frozen:
            self.resume()
        self._signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within {timeout:g}s\n{tail(self.log)}") from None

    def cleanup(self) -> None:
        if self.alive():
            self.resume()
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WADAEMON_", "FIRESTORE_", "GOOGLE_", "FIREBASE_"))}
    env.update(extra)
    return env


class SimServer:
    """A running ``wadaemon simserver`` and a client of its control API."""

    def __init__(self, workdir: Path, args: Sequence[str]) -> None:
        self.log = workdir / "simserver.log"
        argv = [sys.executable, "-m", "wadaemon.cli", "simserver", "--listen", "127.0.0.1:0", *args]
        self.proc = Proc("simserver", argv, _child_env({"INSTANCE_ID": "simserver"}), self.log,
                         stdout=subprocess.PIPE)
        line = self._listening_line()
        found = LISTENING.search(line)
        if found is None:
            self.proc.cleanup()
            raise AssertionError(f"simserver did not start: {line!r}\n{tail(self.log)}")
        self.host, self.port = found.group(1), int(found.group(2))
        self.control = found.group(3)
        self.accounts = found.group(4).split(",")

    def _listening_line(self) -> str:
        stdout = self.proc.popen.stdout
        assert stdout is not None
        os.set_blocking(stdout.fileno(), False)
        deadline = time.monotonic() + START_TIMEOUT_S
        buffer = b""
        while b"\n" not in buffer and time.monotonic() < deadline and self.proc.alive():
            chunk = stdout.read()
            if chunk:
                buffer += chunk
            else:
                time.sleep(0.02)
        return buffer.decode(errors="replace")

    @property
    def address(self) -> str:
        """What ``WADAEMON_SIMSERVER`` is set to."""
        return f"{self.host}:{self.port}"

    def _url(self, account: str, path: str = "") -> str:
        return f"{self.control}/accounts/{account}{path}"

    def truth(self, account: str) -> GroundTruth:
        return msgspec.convert(http("GET", self._url(account, "/truth")), GroundTruth)

    def summary(self, account: str) -> AccountSummary:
        return msgspec.convert(http("GET", self._url(account)), AccountSummary)

    def summaries(self) -> dict[str, AccountSummary]:
        """Every account's summary, in one call."""
        found = msgspec.convert(http("GET", f"{self.control}/accounts"), list[AccountSummary])
        return {summary.account: summary for summary in found}

    def inject(self, account: str, **body: Any) -> str:
        """One live event (``chat``, ``text``, ``fromMe``, ``kind``...); the new message's id."""
        return str(http("POST", self._url(account, "/inject"), body)["id"])

    def traffic(self, account: str, *, rate: float, count: int | None = None, **ratios: float) -> None:
        http("POST", self._url(account, "/traffic"), {"rate": rate, "count": count, **ratios})

    def stop_traffic(self, account: str) -> None:
        http("DELETE", self._url(account, "/traffic"))

    def drop_queue(self, account: str) -> int:
        return int(http("POST", self._url(account, "/offline-queue/drop"))["dropped"])

    def phone(self, account: str, **body: Any) -> AccountSummary:
        """``historyAnswers``, ``historyDelayMs``, ``failSends``."""
        return msgspec.convert(http("POST", self._url(account, "/phone"), body), AccountSummary)

    def disconnect(self, account: str) -> bool:
        return bool(http("POST", self._url(account, "/disconnect"))["closed"])

    def stop(self) -> int:
        return self.proc.stop()


class DaemonProc(Proc):
    """One ``wadaemon run`` process; ``port`` is its HTTP port (``/ready``, ``/diag``)."""

    def __init__(self, instance_id: str, argv: Sequence[str], env: Mapping[str, str], log: Path,
                 port: int) -> None:
        super().__init__(instance_id, argv, env, log)
        self.instance_id = instance_id
        self.port = port

    def diag(self) -> Any:
        return http("GET", f"http://127.0.0.1:{self.port}/diag")

    def ready(self) -> bool:
        try:
            with _opener.open(f"http://127.0.0.1:{self.port}/ready", timeout=2) as response:
                return int(response.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        wait_until(lambda: self.alive() and self.ready(), f"{self.instance_id} is ready", timeout,
                   logs=[self.log])

    def account_state(self, account: str) -> str:
        for row in self.diag()["accounts"]:
            if row["accountId"] == account:
                return str(row["state"])
        return ""


class DaemonSet:
    """``wadaemon run`` processes sharing one store, each with its own data dir."""

    def __init__(self, workdir: Path, *, firestore: Any = None) -> None:
        self.workdir = workdir
        self.firestore = firestore  # a tests.firestore_emulator.FirestoreEmulator, or None
        self.store_file = workdir / "shared" / "wadaemon.sqlite"
        self.store_file.parent.mkdir(parents=True, exist_ok=True)
        self.procs: list[DaemonProc] = []
        self._store: Store | None = None

    def start(self, instance_id: str, sim: SimServer, *, accounts: Sequence[str] = (),
              env: Mapping[str, str] | None = None) -> DaemonProc:
        """Start ``wadaemon run`` as ``instance_id`` against ``sim`` (the same ``instance_id``
        again reuses its data dir: a restart). ``accounts``: WADAEMON_ACCOUNTS (default: all)."""
        data_dir = self.workdir / instance_id
        data_dir.mkdir(parents=True, exist_ok=True)
        extra = {"INSTANCE_ID": instance_id, "WADAEMON_DATA_DIR": str(data_dir),
                 "WADAEMON_SIMSERVER": sim.address, "HOST": "127.0.0.1", "PORT": str(free_port()),
                 "WADAEMON_ACCOUNTS": ",".join(accounts), **(env or {})}
        if self.firestore is not None:
            extra.update(FIRESTORE_EMULATOR_HOST=self.firestore.hostport,
                         FIRESTORE_PROJECT=self.firestore.project)
        else:
            link = data_dir / "wadaemon.sqlite"
            if not link.is_symlink():
                link.symlink_to(self.store_file)
        argv = [sys.executable, "-m", "wadaemon.cli", "run"]
        proc = DaemonProc(instance_id, argv, _child_env(extra), data_dir / "daemon.log", int(extra["PORT"]))
        self.procs.append(proc)
        return proc

    def store(self) -> Store:
        """The shared store, opened from the test process (closed by the fixture)."""
        if self._store is None:
            if self.firestore is not None:
                from wadaemon.store.firestore import FirestoreStore

                self._store = FirestoreStore.from_settings(self.firestore.project, None, None,
                                                           self.firestore.hostport)
            else:
                from wadaemon.store.sqlite import SqliteStore

                self._store = SqliteStore(self.store_file)
        return self._store

    def _message_docs(self, account: str) -> Iterator[tuple[str, str, MessageDoc]]:
        store = self.store()
        for thread in store.list_threads(account, limit=100_000):
            for doc in store.list_messages(thread_id_for(account, thread.client_jid), limit=1_000_000,
                                           order="asc"):
                yield doc.wa_message_id or doc.id, thread.client_jid, doc

    def messages(self, account: str) -> dict[str, tuple[str, MessageDoc]]:
        """Every message document of an account: id -> (thread's client JID, document)."""
        return {message_id: (jid, doc) for message_id, jid, doc in self._message_docs(account)}

    def message_ids(self, account: str) -> set[str]:
        return set(self.messages(account))

    def message_counts(self, account: str) -> Counter[str]:
        """How many message documents each message id has, over all the account's threads
        (exactly once: every count is 1)."""
        return Counter(message_id for message_id, _, _ in self._message_docs(account))

    def logs(self) -> list[Path]:
        return [proc.log for proc in self.procs]

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.cleanup()
        if self._store is not None:
            self._store.close()
