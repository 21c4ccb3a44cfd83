"""The demo daemon as a real process on a free loopback port, for the operations tests.

It runs ``wadaemon demo`` through the real command line (``wadaemon.cli.main``), with one
addition that exists only here: SIGUSR1 blocks the trio loop (the main thread) for
``BLOCK_S`` seconds, writing ``blocked`` / ``unblocked`` lines to ``marks`` around the block,
so a test can wedge the loop while the HTTP thread keeps answering.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import os, signal, sys, time

def block(signum, frame):
    with open(os.environ["MARKS"], "a") as marks:
        marks.write(f"blocked {time.time()}\\n")
    time.sleep(float(os.environ.get("BLOCK_S", "3")))
    with open(os.environ["MARKS"], "a") as marks:
        marks.write("unblocked\\n")

signal.signal(signal.SIGUSR1, block)
from wadaemon.cli import main
sys.exit(main(["demo", *sys.argv[1:]]))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class DemoProcess:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    stderr_path: Path
    marks: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def wait_until(self, condition: str, check: object, deadline_s: float = 60.0) -> None:
        """Poll ``check()`` (across processes: the one acceptable poll) until true."""
        assert callable(check)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            assert self.process.poll() is None, f"the daemon exited: {self.stderr()[-2000:]}"
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {condition}: {self.stderr()[-2000:]}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@contextmanager
def demo_process(tmp: Path, *args: str, env: Mapping[str, str] = {}) -> Iterator[DemoProcess]:
    """Start the demo; always killed on the way out, whatever the test did."""
    port = free_port()
    data_dir = tmp / "data"
    stderr_path = tmp / "daemon.stderr"
    marks = tmp / "marks"
    full_env = {key: value for key, value in os.environ.items()
                if key not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                               "INVOCATION_ID", "FIRESTORE_EMULATOR_HOST",
                               "GOOGLE_APPLICATION_CREDENTIALS", "FIREBASE_SERVICE_ACCOUNT_JSON")}
    full_env.update({"PORT": str(port), "HOST": "127.0.0.1", "WADAEMON_DATA_DIR": str(data_dir),
                     "INSTANCE_ID": "ops-test", "MARKS": str(marks), **env})
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=REPO, env=full_env,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    running = DemoProcess(process, port, data_dir, stderr_path, marks)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
