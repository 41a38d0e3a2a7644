"""Retrofit kit on the bench: a Heidelberg Energy Control driven over its (simulated) RS-485.

The agent runs as its own process against ``config/retrofit-heidelberg.example.yaml`` on the
wallbox rig (``hil.simrig_wallbox``: the wallbox's register table, its 19200 8E1 line timing, its
watchdog and fail-safe), with a real mosquitto. What the tests look at is the wallbox's side:
the current register it was written, what its own pilot offers, its fail-safe.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from hil.broker import Mosquitto
from tests.hil.orderly_harness import REPO, AgentOnRig, run_cli

pytestmark = [pytest.mark.mqtt, pytest.mark.hil]

RETROFIT = REPO / "config" / "retrofit-heidelberg.example.yaml"
SCRIPT = REPO / "docs" / "aggregator-examples.sh"
# short timers keep the runs short; the behaviour is the same at the example's 10 s watchdog
FAST: dict[str, Any] = {"poll_ms": 200, "verify_s": 1, "lost_ms": 1500, "watchdog_s": 2}


def retrofit(tmp_path: Path, broker: Mosquitto, *, mqtt: dict[str, Any] | None = None,
             connector: dict[str, Any] | None = None) -> AgentOnRig:
    conn = {"wallbox": dict(FAST), **(connector or {})}
    return AgentOnRig(tmp_path, broker, mqtt=mqtt, connector=conn, base=RETROFIT,
                      device_id="CN-TEST-R001")


def register_writes(a: AgentOnRig, register: str) -> list[int]:
    return [int(e.data["value"]) for e in a.rig.timeline.events("wallbox_write",
                                                                   register=register)]


async def test_charge_and_curtail_over_mqtt(broker: Mosquitto, tmp_path: Path) -> None:
    async with retrofit(tmp_path, broker) as a:
        birth = next(s for s in a.recorder.json_on(f"{a.base}/status") if s.get("online"))
        (info,) = birth["connectors"]
        assert info["pilot"] == "wallbox" and info["wallboxProfile"] == "heidelberg"
        assert info["maxCurrentA"] == 16.0
        sim = a.rig.connector()
        assert sim.memory["standby"] == 4  # standby disabled: its RS-485 side stays awake

        await a.plug_and_charge()
        await a.wait_offer(16)
        reply = await a.send("setLimit", {"limit": {"value": 10.37, "unit": "A"},
                                          "durationS": 600, "dsr": True})
        assert reply["status"] == "accepted"
        await a.wait_offer(10.3, tol=0.01)  # rounded down to its 0.1 A, never above
        assert sim.memory["max_current"] == 103
        reply = await a.send("setLimit", {"limit": {"value": 4, "unit": "A"},
                                          "durationS": 600, "dsr": True})
        await a.wait_offer(0.0, tol=0.01)  # below its 6 A: paused by current 0, never 4 A
        assert not a.rig.contactor_closed()
        assert all(v == 0 or 60 <= v <= 160 for v in register_writes(a, "max_current"))
        await a.send("clearProfile", {})
        await a.wait_offer(16)
        state = a.state()
        assert state is not None and state["connectors"][0]["pilot"] == "C"
        await a.wait(lambda: any(c["energyImportWh"] >= 5 for t in a.telemetry()
                                 for c in t["connectors"]), "energy in the telemetry")
        a.rig.ev_action("unplug")
        ended = (await a.wait_event("sessionEnded"))["body"]
        assert ended["energyWh"] > 0  # from the wallbox's own energy register
        await a.wait_event("pilotStateChanged", lambda e: e["body"]["to"] == "A")
        letters = [e["body"]["to"] for e in a.events("pilotStateChanged")]
        assert "C" in letters and letters[-1] == "A"  # the wallbox's letters, upstream as ever


async def test_sigkill_leaves_the_wallbox_at_its_failsafe_current(
        broker: Mosquitto, tmp_path: Path) -> None:
    mqtt = {"failsafe": {"after_s": 60, "value": 8, "unit": "A"}}
    async with retrofit(tmp_path, broker, mqtt=mqtt) as a:
        sim = a.rig.connector()
        assert sim.memory["failsafe_current"] == 80 and sim.memory["watchdog_timeout"] == 2000
        await a.plug_and_charge()
        await a.wait_offer(16)
        killed = a.rig.now()
        a.kill_agent()
        await a.wait_offer(8, tol=0.01, limit_s=10)
        await a.wait(lambda: a.rig.timeline.first("signal", killed, name="failsafe",
                                                  value=True) is not None, "failsafe signal")
        entered = a.rig.timeline.first("signal", killed, name="failsafe", value=True)
        assert entered is not None
        assert entered.t - killed <= sim.watchdog_s() + 1.0  # its own timeout, not ours
        assert a.rig.contactor_closed()  # still charging, at the defined current


async def test_bus_cut_falls_back_then_recovers(broker: Mosquitto, tmp_path: Path) -> None:
    mqtt = {"failsafe": {"after_s": 60, "value": 8, "unit": "A"}}
    async with retrofit(tmp_path, broker, mqtt=mqtt) as a:
        await a.plug_and_charge()
        await a.send("setLimit", {"limit": {"value": 12, "unit": "A"}, "durationS": 600,
                                  "dsr": True})
        await a.wait_offer(12)
        a.rig.inject("bus_cut")
        await a.wait_offer(8, tol=0.01, limit_s=10)  # the wallbox's own fail-safe
        fault = await a.wait_event("fault", lambda e: e["body"]["code"] == "WALLBOX_LOST")
        assert fault["body"]["code"] == "WALLBOX_LOST"
        a.rig.inject("bus_cut", False)
        await a.wait_event("faultCleared", lambda e: e["body"]["code"] == "WALLBOX_LOST")
        await a.wait_offer(12)  # limit, watchdog and fail-safe are the agent's again


async def test_reset_to_defaults_is_reprogrammed(broker: Mosquitto, tmp_path: Path) -> None:
    async with retrofit(tmp_path, broker, mqtt={"failsafe": {"value": 7, "unit": "A"}}) as a:
        sim = a.rig.connector()
        await a.plug_and_charge()
        await a.send("setLimit", {"limit": {"value": 9, "unit": "A"}, "durationS": 600,
                                  "dsr": True})
        await a.wait_offer(9)
        a.rig.inject("wallbox_reset")
        assert sim.memory["watchdog_timeout"] == 0 and sim.memory["standby"] == 0
        await a.wait(lambda: sim.memory["watchdog_timeout"] == 2000 and
                     sim.memory["standby"] == 4 and sim.memory["failsafe_current"] == 70 and
                     sim.memory["max_current"] == 90, "wallbox re-programmed")
        await a.wait_offer(9)


async def test_out_of_table_state_is_a_fault_with_the_raw_value(
        broker: Mosquitto, tmp_path: Path) -> None:
    async with retrofit(tmp_path, broker) as a:
        await a.plug_and_charge()
        await a.wait_offer(16)
        a.rig.inject("wallbox_state", 42)
        fault = await a.wait_event("fault",
                                   lambda e: e["body"]["code"] == "WALLBOX_STATE_INVALID")
        assert "42" in fault["body"]["detail"]
        await a.wait_offer(0.0, tol=0.01)  # paused through its disable path
        a.rig.inject("wallbox_state", None)
        await a.wait_event("faultCleared",
                           lambda e: e["body"]["code"] == "WALLBOX_STATE_INVALID")
        await a.wait_offer(16)


async def test_the_aggregator_examples_run_unchanged_against_a_retrofit(
        broker: Mosquitto, tmp_path: Path) -> None:
    if not all(shutil.which(c) for c in ("mosquitto_pub", "mosquitto_sub", "mosquitto_rr")):
        pytest.skip("mosquitto-clients not installed")
    # single phase at 220 V: the script's 3.5 kW is 15.9 A, within the Heidelberg's 6-16 A
    async with retrofit(tmp_path, broker, mqtt={"groups": ["tx-7"]},
                        connector={"phases": 1, "nominal_voltage_v": 220}) as a:
        await a.plug_and_charge()
        await a.wait_offer(16)
        env = {**os.environ, "HOST": broker.host, "PORT": str(broker.port),
               "DEVICE": a.device_id, "GROUP": "tx-7", "MQTT_OPTS": ""}
        done = await run_cli("bash", str(SCRIPT), env=env, limit_s=60)
        assert done.returncode == 0, done.stderr
        started = {e["body"]["commandId"]: e["body"] for e in a.events("commandStarted")}
        assert any(abs(b.get("appliedLimitA", 0) - 15.91) < 0.1 for b in started.values())
        await a.wait(lambda: len(a.events("commandCleared")) >= 2, "both leases cleared")
        await a.wait_offer(16)
        writes = register_writes(a, "max_current")
        assert 159 in writes and 100 in writes  # 15.9 A (3.5 kW) and the group's 10 A


async def test_the_retrofit_scenario_passes(tmp_path: Path) -> None:
    """`evse-hil run hil/scenarios/retrofit-heidelberg.yaml` (`make demo-retrofit`)."""
    from hil.scenario import load_scenario
    from hil.scenario_runner import run_scenario

    path = REPO / "hil" / "scenarios" / "retrofit-heidelberg.yaml"
    result = await run_scenario(load_scenario(path), tmp_path / "retrofit")
    failed = [f"{c.name}: measured {c.measured}, limit {c.limit}" for c in result.checks
              if not c.passed]
    assert result.error is None, result.error
    assert result.checks and not failed, "\n".join(failed)
    assert (tmp_path / "retrofit" / "timeline.png").exists()


@pytest.mark.parametrize(("profile", "paused_by"), [("phoenix-ev-cc", "charging_enabled"),
                                                    ("evse-wb-din", "configured_current")])
async def test_the_other_built_in_profiles_charge_and_pause(
        broker: Mosquitto, tmp_path: Path, profile: str, paused_by: str) -> None:
    """No energy register: a meter shares the wallbox's bus; Phoenix pauses by its enable coil
    (never by an illegal current), EVSE-WB-DIN keeps its 200 ms gap (its simulator does not
    answer inside it)."""
    overrides = {"buses": {"wallbox": {"baudrate": 9600, "parity": "N", "timeout_ms": 200}}}
    conn = {"wallbox": {**FAST, "profile": profile, "poll_ms": 500, "watchdog_s": 10},
            "meter": {"bus": "wallbox", "unit": 2, "model": "sdm630", "poll_ms": 1000}}
    async with AgentOnRig(tmp_path, broker, connector=conn, overrides=overrides, base=RETROFIT,
                          device_id="CN-TEST-R002") as a:
        sim = a.rig.connector()
        await a.plug_and_charge()
        await a.wait_offer(16)
        await a.send("setLimit", {"limit": {"value": 11.6, "unit": "A"}, "durationS": 600,
                                  "dsr": True})
        await a.wait_offer(11, tol=0.01)  # whole amperes: rounded down
        await a.send("setLimit", {"limit": {"value": 3, "unit": "A"}, "durationS": 600,
                                  "dsr": True})
        await a.wait_offer(0.0, tol=0.01)
        assert sim.memory[paused_by] == 0
        if profile == "phoenix-ev-cc":
            assert all(v >= 6 for v in register_writes(a, "max_current"))
        await a.send("clearProfile", {})
        await a.wait_offer(16)
        assert not a.events("fault")  # the gap kept: no lost or garbled state reads
