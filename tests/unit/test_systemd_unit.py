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
    values: dict[str, list[str]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


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
