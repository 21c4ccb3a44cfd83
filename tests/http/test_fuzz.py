"""schemathesis against the real daemon (``wadaemon demo`` as a process, simulated phones,
SQLite) with tokens set: once with the admin token (every check: no 5xx, every answer as
documented, status codes, content types, headers), once with no credentials (every data and
admin route must refuse: the HAR report is checked for any 2xx outside the open routes).

``positive_data_acceptance`` is left out on purpose: it expects every schema-valid request to
succeed, but some valid-looking input can only be refused by the server: an opaque ``before``
cursor the server never issued, an unknown account or thread id (404), a ``to`` that is no
phone number (400 ``bad_recipient``). Bounded: a few examples per operation, about a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.demo_process import demo_process
from wadaemon.http.app import all_routes

pytestmark = pytest.mark.slow

API, ADMIN = "fuzz-api-token-0123456789", "fuzz-admin-token-9876543210"
OPEN_PATHS = {route.path for route in all_routes() if route.level == "open"}


def schemathesis(tmp_path: Path, port: int, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text('[parameters]\n"path.accountId" = "demo-1"\n')
    command = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run",
               f"http://127.0.0.1:{port}/openapi.json", "--checks", "all",
               "--exclude-checks", "positive_data_acceptance", "--max-examples", "4", "--seed", "13",
               "--no-color", "--output-truncate", "true", "--request-timeout", "10",
               "--report-har-path", str(tmp_path / f"{name}.har"), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path, check=False)


def test_schemathesis_finds_no_5xx_no_nonconformance_and_no_auth_bypass(tmp_path: Path) -> None:
    env = {"API_TOKEN": API, "ADMIN_TOKEN": ADMIN}
    with demo_process(tmp_path, "--accounts", "1", "--messages", "300", env=env) as demo:
        demo.wait_until("/ready", lambda: demo.get("/ready")[0] == 200)
        authed = schemathesis(tmp_path, demo.port, "authed", "-H", f"Authorization: Bearer {ADMIN}")
        anonymous = schemathesis(tmp_path, demo.port, "anonymous")
        demo.stop()
    assert authed.returncode == 0, authed.stdout[-6000:]
    assert anonymous.returncode == 0, anonymous.stdout[-6000:]
    entries = json.loads((tmp_path / "anonymous.har").read_text())["log"]["entries"]
    assert len(entries) > 100
    base = f"http://127.0.0.1:{demo.port}"
    open_path = {"/" + p.strip("/") for p in OPEN_PATHS}
    bypasses = [(entry["request"]["method"], entry["request"]["url"], entry["response"]["status"])
                for entry in entries
                if entry["response"]["status"] < 300
                and entry["request"]["url"].removeprefix(base).split("?")[0] not in open_path]
    assert bypasses == []
    statuses = [e["response"]["status"] for e in json.loads((tmp_path / "authed.har").read_text())["log"]["entries"]]
    assert statuses.count(200) > 20 and not [s for s in statuses if s >= 500]
