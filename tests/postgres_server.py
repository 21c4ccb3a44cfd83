"""pytest plugin: a real PostgreSQL server, one per test session, started lazily.

``postgres_server`` (session): ``initdb`` in a temporary directory, then ``postgres`` on a free
loopback port (no Unix socket outside the temp dir, trust authentication on loopback only),
waited for until it accepts a connection; stopped (SIGTERM, then SIGKILL) at the end of the
session, whether the tests passed or not. PostgreSQL refuses to run as root: when the tests
run as root (CI does), the server runs as ``nobody`` with the data directory handed to it.
Only tests that request it start PostgreSQL. ``scripts/ensure-postgres`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from glob import glob
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0
INSTALL_HINT = "install with: apt-get install postgresql (or run scripts/ensure-postgres)"


class PostgresServer:
    def __init__(self, port: int, user: str) -> None:
        self.port = port
        self.user = user

    def url(self, database: str = "postgres") -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{database}?sslmode=disable"


def _bin_dir() -> Path:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        pytest.fail(f"PostgreSQL is not installed: {INSTALL_HINT}")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_user(root: Path) -> tuple[str, Callable[[], None] | None]:
    """The OS user to run PostgreSQL as, and the ``preexec_fn`` that becomes it."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name, None
    nobody = pwd.getpwnam("nobody")
    os.chown(root, nobody.pw_uid, nobody.pw_gid)

    def become() -> None:
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    return nobody.pw_name, become


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="wadaemon-pg-"))
    os.chmod(root, 0o700)
    data = root / "data"
    user, become = _as_user(root)
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(root)}
    subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "wadaemon", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, env=env, preexec_fn=become, cwd=root)
    port = _free_port()
    log = root / "server.log"
    with open(log, "wb") as out:
        if become is not None:
            os.chown(log, pwd.getpwnam(user).pw_uid, -1)
        server = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
             "-k", str(root), "-c", "fsync=off", "-c", "shared_buffers=16MB", "-c", "max_connections=40"],
            stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=become, cwd=root, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"postgres exited at start: {log.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                ready = subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                                       capture_output=True, env=env)
                if ready.returncode == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail("postgres did not accept connections in time")
            time.sleep(0.1)  # polling a separate process's readiness, with a deadline
        yield PostgresServer(port, "wadaemon")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        shutil.rmtree(root, ignore_errors=True)
