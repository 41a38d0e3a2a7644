"""Config of a retrofitted wallbox: the example is valid and documented; errors say what to do."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent import config_wallbox as cw
from agent.busplan import analyse, render
from agent.config import parse_config
from agent.config_wallbox import WallboxConnectorConfig
from agent.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "retrofit-heidelberg.example.yaml"


@pytest.fixture
def example() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    return data


def _custom_block() -> dict[str, Any]:
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# custom:")
    block = [line[2:] for line in lines[start:] if line.startswith("#")]
    custom = yaml.safe_load("\n".join(block))["custom"]
    assert isinstance(custom, dict)
    return custom


def _problems(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_example_is_valid_and_check_config_prints_the_plan(example: dict[str, Any]) -> None:
    cfg = parse_config(example)
    (conn,) = cfg.wallbox_connectors()
    assert conn.wallbox.profile == "heidelberg" and not cfg.board_connectors()
    report = analyse(cfg)
    assert not report.refused and report.connectors == []
    (plan,) = report.wallboxes
    text = render(report)
    assert "control path" in text and "watchdog (10 s" in text
    assert "fail-safe current 0 A" in text  # no mqtt, no failsafe_current_a: paused
    assert "reaction (CP change" not in text  # no GB/T reaction it cannot see
    assert plan.terms_ms["write frame"] > 0 and plan.control_path_ms > plan.terms_ms["write frame"]


def test_every_wallbox_key_is_documented() -> None:
    text = EXAMPLE.read_text()
    models = [WallboxConnectorConfig, cw.WallboxConfig, cw.WallboxCustomConfig,
              cw.WallboxStateConfig, cw.WallboxCurrentConfig, cw.WallboxDisableConfig,
              cw.WallboxWatchdogConfig, cw.WallboxRegisterConfig, cw.WallboxEnergyConfig,
              cw.WallboxSetupWriteConfig]
    missing = [f"{m.__name__}.{name}" for m in models for name in m.model_fields
               if not re.search(rf"\b{name}\b\s*:", text)]
    assert not missing, f"document these keys in {EXAMPLE.name}: {missing}"


def test_commented_custom_profile_is_valid(example: dict[str, Any]) -> None:
    wb = example["connectors"][0]["wallbox"]
    wb.update(profile="custom", custom=_custom_block())
    cfg = parse_config(example)
    profile = cfg.wallbox_connectors()[0].wallbox.resolve()
    assert profile.current.scale == 0.1 and profile.disable.kind == "register"
    assert profile.states[9] == "error" and profile.min_gap_s == 0.05
    assert "custom" in render(analyse(cfg))


def test_failsafe_from_mqtt_in_watts(example: dict[str, Any]) -> None:
    example["mqtt"] = {"host": "b", "tls": False,
                       "failsafe": {"value": 4.6, "unit": "kW", "after_s": 60}}
    text = render(analyse(parse_config(example)))
    assert "fail-safe current 6.6 A" in text  # 4600 W / (3 x 230 V) = 6.67 A, rounded down


def test_profile_without_watchdog_says_so(example: dict[str, Any]) -> None:
    wb = example["connectors"][0]
    wb["wallbox"]["profile"] = "evse-wb-din"
    wb["meter"] = {"bus": "wallbox", "unit": 2, "model": "sdm630"}
    text = render(analyse(parse_config(example)))
    assert "NO FALLBACK" in text and "wallbox gap 200.00" in text


@pytest.mark.parametrize(("change", "words"), [
    (lambda c: c["wallbox"].update(profile="acme"), "wallbox.profile"),
    (lambda c: c["wallbox"].update(watchdog_s=100), "does not fit"),
    (lambda c: c["wallbox"].update(poll_ms=5000), "feeds the watchdog too rarely"),
    (lambda c: c["wallbox"].update(bus="nope"), "unknown bus"),
    (lambda c: c["wallbox"].update(profile="phoenix-ev-cc", failsafe_current_a=8),
     "has no fail-safe current register"),
    (lambda c: c["wallbox"].update(profile="evse-wb-din"), "has no energy register"),
    (lambda c: c["wallbox"].update(profile="custom"), "'custom' describes"),
    (lambda c: c.update(hardware="robot"), "hardware must be"),
    (lambda c: c.update(pilot_board={"bus": "wallbox"}), "pilot_board"),
])
def test_clear_messages(example: dict[str, Any], change: Any, words: str) -> None:
    change(example["connectors"][0])
    problems = _problems(example)
    assert any(words in f"{key} {msg}" for key, msg, _fix in problems), problems


def test_custom_profile_checks(example: dict[str, Any]) -> None:
    wb = example["connectors"][0]["wallbox"]
    custom = _custom_block()
    wb.update(profile="custom", custom=copy.deepcopy(custom))
    wb["custom"]["state"]["values"] = {1: "A"}
    assert "needs a value for B, C" in str(_problems(example))
    wb["custom"] = copy.deepcopy(custom)
    wb["custom"]["disable"] = {"kind": "coil"}
    assert "needs the address of its coil" in str(_problems(example))
    wb["custom"] = copy.deepcopy(custom)
    wb["custom"]["watchdog"] = None
    assert "add watchdog" in str(_problems(example))
    wb["custom"] = copy.deepcopy(custom)
    wb["custom"]["current"]["min_a"] = 40
    assert "above max_a" in str(_problems(example))
    wb["custom"] = copy.deepcopy(custom)
    wb["custom"]["min_gap_ms"] = 400
    assert "leaves no room" in str(_problems(example))


def test_a_wallbox_and_a_board_connector_do_not_share_a_unit(example: dict[str, Any]) -> None:
    example["connectors"][0]["meter"] = {"bus": "wallbox", "unit": 1, "model": "sdm630"}
    assert "already connectors[1].wallbox" in str(_problems(example))


def test_status_text_names_the_wallbox_and_claims_no_cp() -> None:
    from agent.cli import _render_status

    conn = {"connector": 1, "state": "CHARGING", "evLevel": "STATE_3", "cpMv": None,
            "offeredCurrentA": 10.3, "contactorCommanded": True, "contactorFeedback": None,
            "faults": [], "meter": None, "pilot": "wallbox", "wallboxProfile": "heidelberg"}
    text = _render_status({"deviceId": "d", "pid": 1, "ready": True, "uptimeS": 1,
                           "connectors": [conn]})
    assert "wallbox heidelberg" in text and "charging=yes" in text and "CP" not in text
    board = {**conn, "pilot": "agent", "wallboxProfile": None, "cpMv": 6000}
    text = _render_status({"deviceId": "d", "pid": 1, "ready": True, "uptimeS": 1,
                           "connectors": [board]})
    assert "CP 6000 mV" in text and "contactor cmd=closed" in text
