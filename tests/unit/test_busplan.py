"""check-config: the schedule of each bus and the reaction bound it guarantees."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.busplan import analyse, render
from agent.config import parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "evse-agent.example.yaml"


@pytest.fixture
def example() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    return data


def single_bus(data: dict[str, Any], *, baud: int, meter: str) -> dict[str, Any]:
    d = copy.deepcopy(data)
    d["buses"] = {"rs485": {"kind": "serial", "port": "/dev/ttyUSB0", "baudrate": baud,
                            "timeout_ms": 200, "device_latency_ms": 10}}
    conn = d["connectors"][0]
    for part in ("pilot_board", "relay_board", "meter"):
        conn[part]["bus"] = "rs485"
    conn["meter"]["unit"] = 3
    conn["meter"]["model"] = meter
    return d


def test_example_topology_meets_the_budget(example: dict[str, Any]) -> None:
    report = analyse(parse_config(example))
    assert report.ok
    (c,) = report.connectors
    assert 0 < c.bound_ms <= 100
    assert sum(c.terms_ms.values()) == pytest.approx(c.bound_ms, abs=0.05)
    text = render(report)
    assert "bus control" in text and "bus meter" in text and "OK" in text


def test_single_9600_bus_with_three_phase_meter_is_refused(example: dict[str, Any]) -> None:
    report = analyse(parse_config(single_bus(example, baud=9600, meter="dtsu666")))
    (c,) = report.connectors
    assert not c.ok and c.bound_ms > 100
    assert any("exceeds the 100 ms budget" in r for r in c.reasons)
    assert any("own bus" in f for f in c.fixes)
    assert any("baud" in f for f in c.fixes)
    assert any("fewer meter registers" in f for f in c.fixes)


def test_meter_on_the_control_bus_counts_its_silent_occupancy(example: dict[str, Any]) -> None:
    d = copy.deepcopy(example)
    d["connectors"][0]["meter"]["bus"] = "control"
    d["connectors"][0]["meter"]["unit"] = 3
    shared = analyse(parse_config(d)).connectors[0]
    alone = analyse(parse_config(example)).connectors[0]
    assert shared.terms_ms["blocking"] > alone.terms_ms["blocking"]


def test_cli_prints_schedule_and_refuses_with_exit_code(example: dict[str, Any],
                                                        tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(EXAMPLE)],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "worst-case reaction" in ok.stdout and "pilot sample FC04x8" in ok.stdout
    bad = tmp_path / "one-bus.yaml"
    bad.write_text(yaml.safe_dump(single_bus(example, baud=9600, meter="dtsu666")))
    refused = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(bad)],
                             capture_output=True, text=True, check=False)
    assert refused.returncode == 3
    assert "REFUSED" in refused.stdout and "to fix:" in refused.stdout


def test_a_driver_settings_error_is_a_configuration_error(example: dict[str, Any],
                                                          tmp_path: Path) -> None:
    """The meter driver refuses the map (its own ``DriverConfigError``); the agent reports it
    as any other configuration error: exit code 2, the key and the fix."""
    d = copy.deepcopy(example)
    d["connectors"][0]["meter"]["model"] = "custom"
    d["connectors"][0]["meter"]["registers"] = [
        {"name": "voltage_l1", "address": 0, "function": 4, "type": "f32", "unit": "V"}]
    bad = tmp_path / "short-map.yaml"
    bad.write_text(yaml.safe_dump(d))
    refused = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(bad)],
                             capture_output=True, text=True, check=False)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("configuration error: meter.registers: meter 'custom' lacks")
    assert "-> describe at least voltage_l1" in refused.stderr
