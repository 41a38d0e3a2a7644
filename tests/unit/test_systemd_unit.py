"""The shipped unit: Type=notify, watchdog, non-root, hardened (exposure <= 1.5)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "evse-agent.service"
MAX_EXPOSURE = 1.5


def _service_section() -> dict[str, list[str]]:
    return _section("Service")


def test_unit_is_notify_with_watchdog_as_non_root() -> None:
    svc = _service_section()
    assert svc["Type"] == ["notify"]
    assert int(svc["WatchdogSec"][0]) > 0
    assert svc["User"] != ["root"] and svc["User"]
    assert "dialout" in svc["SupplementaryGroups"][0]
    assert svc["StateDirectory"] == ["evse-agent"]
    assert svc["CapabilityBoundingSet"] == [""]
    assert svc["NoNewPrivileges"] == ["yes"]


def test_unit_parses_as_ini() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    assert parser.has_section("Service") and parser.has_section("Install")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not present")
def test_exposure_score(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    score = float(match.group(1))
    with capsys.disabled():
        print(f"\nsystemd-analyze security exposure of evse-agent.service: {score}")
    assert score <= MAX_EXPOSURE


# --- devices: exactly the two udev names (README, docs/deploy.md "Serial devices") ------------

REPO = UNIT.parents[1]
UDEV_RULE = REPO / "deploy" / "udev" / "99-evse-serial.rules"
INSTALL = REPO / "deploy" / "install.sh"
NAMED_PORTS = ("/dev/evse-control", "/dev/evse-meter")


def _section(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == f"[{name}]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def _device_unit(path: str) -> str:
    """systemd's unit name for a device path (systemd-escape --path --suffix=device)."""
    return path.strip("/").replace("-", "\\x2d").replace("/", "-") + ".device"


def test_devices_allowed_are_exactly_the_two_named_ports() -> None:
    svc = _service_section()
    assert svc["DevicePolicy"] == ["closed"]
    allowed = sorted(v.split()[0] for v in svc["DeviceAllow"])
    assert allowed == sorted(NAMED_PORTS), "no device class (char-ttyUSB ...) and no other node"
    assert all(v.split()[1] == "rw" for v in svc["DeviceAllow"])
    assert "PrivateDevices" not in svc or svc["PrivateDevices"] == ["no"]


def test_the_udev_rule_creates_those_names_as_systemd_devices() -> None:
    rules = [line for line in UDEV_RULE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    for port in NAMED_PORTS:
        rule = next(r for r in rules if f'SYMLINK+="{port.removeprefix("/dev/")}"' in r)
        assert 'TAG+="systemd"' in rule  # else dev-evse\x2d*.device never exists


def test_unit_starts_with_the_adapters_and_stops_with_them() -> None:
    """DeviceAllow= resolves each name once, at start: the unit waits for both adapters, stops
    when one goes away and is started again when it is back (a replug may change the minor)."""
    unit, install = _section("Unit"), _section("Install")
    devices = {_device_unit(p) for p in NAMED_PORTS}
    assert devices == {"dev-evse\\x2dcontrol.device", "dev-evse\\x2dmeter.device"}
    for key in ("BindsTo", "After"):
        assert devices <= set(" ".join(unit[key]).split()), key
    assert devices <= set(" ".join(install["WantedBy"]).split())
    assert "multi-user.target" in " ".join(install["WantedBy"])


def test_a_refused_config_is_not_restarted_in_a_loop() -> None:
    svc = _service_section()
    assert {"2", "3"} <= set(" ".join(svc["RestartPreventExitStatus"]).split())


# --- Documentation= points at files install.sh installs ----------------------------------------


def test_every_documentation_path_is_installed_by_install_sh(tmp_path: Path) -> None:
    """Run install.sh's plan for a staging root, execute its ``install`` steps (plain file
    copies under the staging root) and find every ``Documentation=file://`` path there."""
    docs = [u for v in _section("Unit")["Documentation"] for u in v.split()]
    paths = [u.removeprefix("file://") for u in docs if u.startswith("file://")]
    assert paths and len(paths) == len(docs), docs
    stage = tmp_path / "root"
    plan = subprocess.run(["bash", str(INSTALL), "--dry-run", "--destdir", str(stage)],
                          capture_output=True, text=True, check=True, timeout=60)
    steps = [line[2:] for line in plan.stdout.splitlines() if line.startswith("+ install ")]
    assert steps, plan.stdout
    for step in steps:
        subprocess.run(["bash", "-c", step], check=True, timeout=30)
    for path in paths:
        installed = stage / path.lstrip("/")
        assert installed.is_file(), f"{path} (Documentation=) is not installed by install.sh"
        assert installed.stat().st_size > 0


def test_agent_processes_get_the_units_environment() -> None:
    """The rig and the bench start the agent as the unit does (hil.agent_process)."""
    from hil.agent_process import UNIT_PATH, unit_environment

    assert UNIT_PATH == UNIT
    env = unit_environment()
    assert env == {"MALLOC_ARENA_MAX": "1", "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    assert env == dict(v.split("=", 1) for v in _service_section()["Environment"])


def test_unit_environment_splits_words_as_systemd_does(tmp_path: Path) -> None:
    from hil.agent_process import unit_environment

    unit = tmp_path / "x.service"
    unit.write_text('[Service]\nEnvironment=A=1 "B=two words"\n# Environment=C=3\n')
    assert unit_environment(unit) == {"A": "1", "B": "two words"}
