"""pytest plugin: Google's Cloud Firestore emulator, one per test session, started lazily.

Fixtures:

* ``firestore_emulator`` (session): starts the emulator (a Java program) on a free loopback port
  with a capped heap, waits until ``GET /`` answers ``Ok``, and sets ``FIRESTORE_EMULATOR_HOST``
  *before* any client exists (a Firestore client created without it would probe Google's
  metadata server for credentials). Only tests that request it (or ``firestore_store``) start
  Java: an SQLite-only run never does. The process (started in a session of its own) is killed
  with its whole process group at the end of the session, whether tests passed or not.
* ``firestore_store`` (function): clears the emulator's data and returns a fresh
  ``FirestoreStore``, closed after the test.

Outage injection for tests: ``firestore_emulator.stop()`` kills the emulator (connections are
refused, its data is gone) and ``.start()`` brings it back on the *same* port;
``.pause()``/``.resume()`` freeze and thaw it with SIGSTOP/SIGCONT (connections hang until
deadlines expire, data survives).

Environment knobs: ``WADAEMON_FIRESTORE_EMULATOR_JAR`` (jar path), ``WADAEMON_FIRESTORE_EMULATOR_HEAP``
(``-Xmx`` value, default ``1g``: the emulator's memory only grows, ~3 KB per write).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from wadaemon.store.firestore import FirestoreStore

DEFAULT_JAR = "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
PROJECT = "wadaemon-test"
START_TIMEOUT_S = 60.0
INSTALL_HINT = (
    "install with: apt-get install google-cloud-cli-firestore-emulator openjdk-17-jre-headless "
    "(or run scripts/ensure-firestore-emulator)"
)


class EmulatorError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http(method: str, url: str, timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    # Never go through a proxy for the loopback emulator.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return int(response.status), response.read().decode("utf-8", "replace")


class FirestoreEmulator:
    """A running emulator process: ``host``, ``port``, ``project``, ``hostport``."""

    def __init__(self, java: str, jar: str, *, heap: str = "1g", project: str = PROJECT) -> None:
        self.java = java
        self.jar = jar
        self.heap = heap
        self.project = project
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._log_dir = Path(tempfile.mkdtemp(prefix="wadaemon-firestore-emulator-"))
        self._log_path = self._log_dir / "emulator.log"

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.hostport}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the emulator (again) on this object's port; returns once ``GET /`` says ``Ok``."""
        if self.running():
            self.resume()
            return
        began = time.monotonic()
        log = self._log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [
                    self.java,
                    f"-Xmx{self.heap}",
                    "-XX:+UseSerialGC",
                    "-cp",
                    self.jar,
                    MAIN_CLASS,
                    f"--host={self.host}",
                    f"--port={self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() kills it and its children
            )
        finally:
            log.close()
        self._paused = False
        deadline = began + timeout
        last_error = ""
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise EmulatorError(
                    f"Firestore emulator exited with status {code} during start-up "
                    f"(port {self.port}):\n{self.output()}"
                )
            try:
                status, body = _http("GET", self.url + "/", timeout=1.0)
                if status == 200 and body.strip() == "Ok":
                    break
                last_error = f"GET / answered {status} {body[:200]!r}"
            except (OSError, urllib.error.URLError) as exc:
                last_error = str(exc)
            if time.monotonic() > deadline:
                self.stop()
                raise EmulatorError(
                    f"Firestore emulator not ready after {timeout:.0f} s on port {self.port} "
                    f"(last: {last_error}):\n{self.output()}"
                )
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Kill the emulator (and anything it started); connections are refused until
        ``start()``. Its data is gone."""
        proc, self._proc = self._proc, None
        self._paused = False
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)  # a paused JVM must be able to die
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        # Children that outlived the leader would still sit in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def pause(self) -> None:
        """Freeze the emulator (SIGSTOP): connections hang instead of being refused. Returns
        once every thread of the JVM is stopped: a signal is only queued by ``kill``, and on a
        loaded machine a thread still running could answer one more request."""
        if self._proc is not None and self._proc.poll() is None and not self._paused:
            os.killpg(self._proc.pid, signal.SIGSTOP)
            self._paused = True
            deadline = time.monotonic() + 5.0
            while not self._all_stopped() and time.monotonic() < deadline:
                time.sleep(0.01)

    def _all_stopped(self) -> bool:
        assert self._proc is not None
        tasks = Path(f"/proc/{self._proc.pid}/task")
        try:
            states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in tasks.iterdir()]
        except OSError:  # a thread ended meanwhile: look again
            return False
        return all(state in ("T", "t") for state in states)

    def resume(self) -> None:
        if self._proc is not None and self._paused:
            os.killpg(self._proc.pid, signal.SIGCONT)
            self._paused = False

    def ensure_running(self) -> None:
        """Undo an outage a previous test may have left behind."""
        self.resume()
        if not self.running():
            self.start()

    def reset(self) -> None:
        """Delete every document of the project."""
        url = f"{self.url}/emulator/v1/projects/{self.project}/databases/(default)/documents"
        status, body = _http("DELETE", url, timeout=30.0)
        if status != 200:
            raise EmulatorError(f"emulator reset answered {status}: {body[:500]}")

    def output(self, tail: int = 8000) -> str:
        try:
            return self._log_path.read_bytes()[-tail:].decode("utf-8", "replace")
        except OSError:
            return "(no output captured)"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._log_dir, ignore_errors=True)


def _locate() -> tuple[str, str]:
    jar = os.environ.get("WADAEMON_FIRESTORE_EMULATOR_JAR", DEFAULT_JAR)
    java = shutil.which("java")
    missing = []
    if not Path(jar).is_file():
        missing.append(f"emulator jar {jar}")
    if java is None:
        missing.append("java")
    if missing:
        pytest.fail(f"Firestore emulator not available (missing {', '.join(missing)}): {INSTALL_HINT}", pytrace=False)
    assert java is not None
    return java, jar


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[FirestoreEmulator]:
    java, jar = _locate()
    emulator = FirestoreEmulator(java, jar, heap=os.environ.get("WADAEMON_FIRESTORE_EMULATOR_HEAP", "1g"))
    atexit.register(emulator.close)  # belt and braces: an interrupted session still kills Java
    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    try:
        try:
            emulator.start()
        except EmulatorError:
            emulator.port = _free_port()  # someone may have taken the free port first: once more
            try:
                emulator.start()
            except EmulatorError as exc:
                pytest.fail(str(exc), pytrace=False)
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.hostport
        yield emulator
    finally:
        emulator.close()
        atexit.unregister(emulator.close)
        if previous is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = previous


def emulator_client(emulator: FirestoreEmulator) -> Any:
    """A raw ``google.cloud.firestore.Client`` bound to the emulator (never to Google)."""
    if os.environ.get("FIRESTORE_EMULATOR_HOST") != emulator.hostport:
        raise AssertionError("FIRESTORE_EMULATOR_HOST must point at the test emulator before a client exists")
    from google.cloud import firestore

    return firestore.Client(project=emulator.project)


def close_client(client: Any) -> None:
    """Close a raw client's gRPC channel, if it opened one."""
    api = getattr(client, "_firestore_api_internal", None)
    transport = getattr(api, "transport", None)
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.close()


@pytest.fixture
def firestore_store(firestore_emulator: FirestoreEmulator) -> Iterator[FirestoreStore]:
    from wadaemon.store.firestore import FirestoreStore

    firestore_emulator.ensure_running()
    firestore_emulator.reset()
    store = FirestoreStore(emulator_client(firestore_emulator))
    try:
        yield store
    finally:
        store.close()
