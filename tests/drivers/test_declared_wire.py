"""The drivers declare their transactions (``drivers.wire``); the wire carries exactly those.

Every driver runs every operation it has against the HIL simulators over a real pty, and what
the simulated devices decoded from the line (unit, function, address, count) must be the set
the driver declared: nothing undeclared went out (the bus also counts none), and nothing was
declared that the driver never sends (check-config would time a phantom). The declarations are
the ones ``agent.driver_wires`` derives from the example configs, i.e. what check-config times.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from agent.config import ConnectorConfig, parse_config
from agent.config_wallbox import WallboxConnectorConfig
from agent.driver_wires import board_wires, wallbox_wires
from agent.wallbox.mapping import command_for
from drivers.meters import DDSU666, DTSU666, MapMeter, meter_plan
from drivers.pilot_board import PilotBoardDriver
from drivers.relay_board import RelayBoardDriver
from drivers.wallbox import EVSE_WB_DIN, HEIDELBERG, PHOENIX_EV_CC, WallboxProfile
from drivers.wallbox.driver import WallboxDriver
from drivers.wallbox.profiles import WallboxCommand
from drivers.wallbox.wire import wallbox_wire
from drivers.wire import Transaction
from hil.meter_sim import MeterSim
from hil.pilot_board_sim import PilotBoardSim
from hil.ptybridge import LineSettings
from hil.relay_board_sim import RelayBoardSim
from hil.wallbox_sim import WallboxSim
from tests.drivers.rigs import rig

ROOT = Path(__file__).resolve().parents[2]


def _keys(txns: object) -> set[tuple[int, int, int, int]]:
    return {t.key for t in txns}  # type: ignore[attr-defined]


async def test_board_drivers_send_exactly_what_they_declare() -> None:
    data = yaml.safe_load((ROOT / "config/evse-agent.example.yaml").read_text())
    data["connectors"][0]["meter"]["unit"] = 3  # all three devices share the test's one pty
    cfg = parse_config(data)
    conn = cfg.connectors[0]
    assert isinstance(conn, ConnectorConfig)
    wires = board_wires(cfg, conn)
    meter_sim = MeterSim(DDSU666, unit=conn.meter.unit)
    devices = [PilotBoardSim(unit=conn.pilot_board.unit, clock=time.monotonic).sim_device(),
               RelayBoardSim(unit=conn.relay_board.unit, clock=time.monotonic).sim_device(),
               meter_sim.device]
    declared: tuple[Transaction, ...] = (*wires.pilot.all(), *wires.relay.all(),
                                         *wires.meter.transactions())
    async with rig(devices, timeout_s=0.3) as r:
        meter_sim.attach(r.sim)
        r.bus.declare(declared)
        pilot = PilotBoardDriver(r.bus, wire=wires.pilot)
        relay = RelayBoardDriver(r.bus, wire=wires.relay)
        meter = MapMeter.from_plan(r.bus, wires.meter)
        await pilot.set_watchdog(conn.pilot_board.watchdog_ms)
        await pilot.read_sample()
        await pilot.heartbeat()
        await pilot.set_duty(533)
        await pilot.fault_reset()
        await relay.set_lock(True)
        await relay.set_contactor(True)
        await relay.read_inputs()
        await relay.set_contactor(False)
        await meter.read()
        assert r.bus.stats.undeclared == 0
    assert set(r.sim.accesses) == _keys(declared)


async def test_a_meter_falling_back_stays_within_its_declaration() -> None:
    plan = meter_plan("dtsu666", None, unit=1)
    sim = MeterSim(DTSU666, ct_ratio=5, omit=("energy_import", "energy_export"))
    line = LineSettings(sim.model.serial.baud, sim.model.serial.parity, sim.model.serial.stopbits)
    async with rig([sim.device], line, timeout_s=0.5) as r:
        sim.attach(r.sim)
        r.bus.declare(plan.transactions())
        meter = MapMeter.from_plan(r.bus, plan)
        await meter.read()
        await meter.read()
        assert r.bus.stats.undeclared == 0
    assert set(r.sim.accesses) == _keys(plan.transactions())
    triggers = {t.trigger for t in plan.transactions()}
    assert {"start-up", "after exception 02"} <= triggers


LINES = {"heidelberg": LineSettings(19200, "N", 1), "phoenix-ev-cc": LineSettings(9600),
         "evse-wb-din": LineSettings(9600)}


@pytest.mark.parametrize("profile", [HEIDELBERG, PHOENIX_EV_CC, EVSE_WB_DIN],
                         ids=lambda p: p.name)
async def test_wallbox_driver_sends_exactly_what_it_declares(profile: WallboxProfile) -> None:
    wire = wallbox_wire(profile, 1, poll_s=0.5, verify_s=5.0,
                        energy_s=1.0 if profile.energy is not None else None)
    sim = WallboxSim(profile, unit=1, clock=time.monotonic)
    async with rig([sim.sim_device()], LINES[profile.name], timeout_s=0.3) as r:
        r.bus.declare(wire.all())
        drv = WallboxDriver(r.bus, 1, profile, watchdog_s=5.0, failsafe_a=6.0, wire=wire)
        await drv.program()
        await drv.read_state()
        await drv.apply(command_for(profile, 10.0, 32.0))
        await drv.apply(command_for(profile, 12.0, 32.0))  # up: CONTROL
        await drv.apply(command_for(profile, 8.0, 32.0))  # down: SAFETY_WRITE
        await drv.apply(WallboxCommand(0, False))  # pause
        await drv.apply(command_for(profile, 8.0, 32.0))  # resume
        await drv.read_meter()
        await drv.verify()
        assert r.bus.stats.undeclared == 0
    assert set(r.sim.accesses) == _keys(wire.all())


def test_retrofit_example_declares_what_its_shell_runs() -> None:
    cfg = parse_config(yaml.safe_load(
        (ROOT / "config/retrofit-heidelberg.example.yaml").read_text()))
    conn = cfg.connectors[0]
    assert isinstance(conn, WallboxConnectorConfig)
    wires = wallbox_wires(cfg, conn)
    # No meter configured: the wallbox's own energy registers are read, at the shell's period.
    assert (conn.meter is None) == bool(wires.wallbox.energy)
    assert wires.wallbox.state.period() == conn.wallbox.poll_ms / 1000
