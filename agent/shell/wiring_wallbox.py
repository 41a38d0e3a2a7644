"""Wiring of a retrofitted wallbox connector (``hardware: wallbox``): its core machine, driver
and meter built from config.

Apart from ``agent.shell.wiring`` so that a boards-only agent never imports the wallbox's
machine, driver and profiles (``build_wiring`` imports this module for a config that has one).
"""

from __future__ import annotations

from agent.busplan_wallbox import failsafe_a
from agent.config import AgentConfig
from agent.config_wallbox import WallboxConnectorConfig
from agent.driver_wires import wallbox_wires
from agent.shell.handle import HardwareInfo
from agent.shell.wallbox_connector import WallboxConnector, WallboxTiming
from agent.wallbox.machine import WallboxMachine, WallboxSettings
from agent.wallbox.mapping import max_current_a
from drivers.bus import BusScheduler
from drivers.meters import MapMeter
from drivers.wallbox.driver import WallboxDriver


def make_wallbox(
    config: AgentConfig, conn: WallboxConnectorConfig, buses: dict[str, BusScheduler]
) -> WallboxConnector:
    wb = conn.wallbox
    profile = wb.resolve()
    machine = WallboxMachine(WallboxSettings(profile, conn.rated_current_a, conn.authorisation,
                                             lost_s=wb.lost_ms / 1000))
    wires = wallbox_wires(config, conn)
    driver = WallboxDriver(buses[wb.bus], wb.unit, profile, phases=conn.phases,
                           watchdog_s=wb.watchdog_s, failsafe_a=failsafe_a(config, conn),
                           wire=wires.wallbox)
    buses[wb.bus].declare(wires.wallbox.all())
    meter = None
    if conn.meter is not None and wires.meter is not None:
        meter = MapMeter.from_plan(buses[conn.meter.bus], wires.meter)
        buses[conn.meter.bus].declare(wires.meter.transactions())
    hardware = HardwareInfo("wallbox", "wallbox", profile.name,
                            max_current_a(profile, conn.rated_current_a))
    timing = WallboxTiming(poll_s=wires.wallbox.state.period(), verify_s=wires.wallbox.verify_s,
                           energy_s=wires.energy_s)
    return WallboxConnector(conn.id, machine, driver, meter, timing, hardware)
