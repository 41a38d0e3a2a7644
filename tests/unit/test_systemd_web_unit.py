"""The status page's unit: the agent's user, the token as a systemd credential, loopback only,
hardened (exposure <= 1.5); install.sh installs it and leaves it disabled."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEB_UNIT = REPO / "systemd" / "evse-agent-web.service"
AGENT_UNIT = REPO / "systemd" / "evse-agent.service"
INSTALL = REPO / "deploy" / "install.sh"
MAX_EXPOSURE = 1.5


def service(unit: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = None
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_web_unit_runs_the_web_command_as_the_agents_user() -> None:
    web, agent = service(WEB_UNIT), service(AGENT_UNIT)
    assert web["ExecStart"][0].endswith("evse-agent web -c /etc/evse-agent/evse-agent.yaml")
    for key in ("User", "Group", "StateDirectory", "StateDirectoryMode"):
        assert web[key] == agent[key], key  # the control socket is the agent's, mode 0600
    assert web["LoadCredential"] == ["web-token:/etc/evse-agent/web.token"]
    assert web["IPAddressDeny"] == ["any"] and web["IPAddressAllow"] == ["localhost"]
    assert "DeviceAllow" not in web and web["PrivateDevices"] == ["yes"]
    assert web["CapabilityBoundingSet"] == [""]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not present")
def test_web_unit_exposure_score(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", str(WEB_UNIT)],
                          capture_output=True, text=True, check=False, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    score = float(match.group(1))
    with capsys.disabled():
        print(f"\nsystemd-analyze security exposure of evse-agent-web.service: {score}")
    assert score <= MAX_EXPOSURE


def test_install_puts_the_web_unit_in_place_but_never_enables_it(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(INSTALL), "--dry-run", "--destdir", str(tmp_path / "r")],
                          capture_output=True, text=True, check=True, timeout=60)
    out = done.stdout
    assert re.search(r"install -m 0644 \S+/systemd/evse-agent-web\.service "
                     r"\S+/etc/systemd/system/evse-agent-web\.service", out)
    assert not re.search(r"systemctl\s+(enable|start)\b.*evse-agent-web", out)
    assert "web.token" not in out  # the token is the installer's to create, never install.sh's
