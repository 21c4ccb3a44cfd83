"""The systemd unit: ``systemd-analyze verify`` clean (no error, no warning), and the settings
the daemon's behaviour relies on are there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from wadaemon.actors.status_writer import FINAL_FLUSH_TIMEOUT_S

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "wadaemon@.service"
INSTALLED_BINARY = "/opt/wadaemon/.venv/bin/wadaemon"


def settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_unit_verifies_clean(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point a copy at this venv's wadaemon.
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_BINARY} run" in text
    binary = Path(sys.executable).parent / "wadaemon"
    assert binary.exists()
    (tmp_path / UNIT.name).write_text(text.replace(INSTALLED_BINARY, str(binary)))
    for unit in ("wadaemon@.service", "wadaemon@shop-a.service"):
        result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), \
            result.stdout + result.stderr


def test_unit_has_what_the_daemon_relies_on() -> None:
    found = settings(UNIT.read_text())
    assert found["Type"] == ["notify"]
    assert found["Restart"] == ["on-failure"]
    from wadaemon.http.protocol import MAX_CONNECTIONS
    assert int(found["LimitNOFILE"][0]) >= 8 * MAX_CONNECTIONS  # the HTTP cap binds first
    assert int(found["WatchdogSec"][0]) > 0
    assert found["Environment"] == ["INSTANCE_ID=%i", "WADAEMON_DATA_DIR=/var/lib/wadaemon/%i"]
    assert "/etc/wadaemon/%i.env" in found["EnvironmentFile"]
    # Longer than the 30 s flush of SPEC §3.8 and the status writer's final flush.
    assert int(found["TimeoutStopSec"][0]) > max(30, FINAL_FLUSH_TIMEOUT_S)
    assert found["ProtectSystem"] == ["strict"]
    assert found["NoNewPrivileges"] == ["yes"]
    assert found["ReadWritePaths"] == ["/var/lib/wadaemon"]
