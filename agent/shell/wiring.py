"""Build buses, drivers, pilot machines and controllers from a validated config.

The only place where config keys meet constructors. The drivers run the transactions
``agent.driver_wires`` declares for the config (the list check-config times); each bus is told
what its drivers declared, and the poll loops take their periods from the same declarations.
Nothing here knows whether a port is a real RS-485 adapter or a HIL pty.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from agent.config import AgentConfig, Bus, ConnectorConfig, SafetyConfig, SerialBus
from agent.driver_wires import board_wires
from agent.pilot import PROFILES, CpLevel, PilotMachine, PilotSettings
from agent.shell.connector import ConnectorController, ConnectorTiming
from agent.shell.handle import ConnectorHandle
from drivers.bus import BusScheduler
from drivers.meters import MapMeter
from drivers.pilot_board import PilotBoardDriver
from drivers.relay_board import RelayBoardDriver


@dataclass
class Wiring:
    buses: dict[str, BusScheduler]
    controllers: list[ConnectorHandle]


def make_bus(name: str, cfg: Bus) -> BusScheduler:
    if isinstance(cfg, SerialBus):
        return BusScheduler(
            name,
            cfg.port,
            baud=cfg.baudrate,
            parity=cfg.parity,
            stopbits=cfg.stopbits,
            timeout_s=cfg.timeout_ms / 1000,
            device_latency_s=cfg.device_latency_ms / 1000,
        )
    return BusScheduler(
        name,
        f"tcp://{cfg.host}:{cfg.port}",
        timeout_s=cfg.timeout_ms / 1000,
        device_latency_s=cfg.device_latency_ms / 1000,
    )


def pilot_settings(profile: str, conn: ConnectorConfig, safety: SafetyConfig) -> PilotSettings:
    """The core's settings for one connector (config units -> seconds and amperes)."""
    return PilotSettings(
        profile=PROFILES[profile],
        connection=conn.connection,
        hardware_rating_a=conn.rated_current_a,
        cable_rating_a=conn.cable_rating_a,
        authorisation=conn.authorisation,
        debounce_samples=safety.debounce_samples,
        # A CP short needs no second look: nothing else reads 0 V (gbt18487.md section 1.1).
        debounce_fast=((CpLevel.SHORT, 1),),
        contactor_feedback_timeout_s=safety.contactor_feedback_timeout_ms / 1000,
        lock_timeout_s=safety.lock_timeout_ms / 1000,
        lock_release_s=safety.lock_release_s,
        overcurrent_abs_margin_a=safety.overcurrent_abs_margin_a,
        overcurrent_rel_margin=safety.overcurrent_rel_margin,
        overcurrent_persist_s=safety.overcurrent_persist_s,
        meter_grace_s=safety.meter_grace_s,
        pilot_lost_s=safety.pilot_lost_ms / 1000,
        pilot_frozen_s=safety.pilot_frozen_ms / 1000,
        relay_lost_s=safety.relay_lost_ms / 1000,
        pause_open_timeout_s=safety.pause_open_timeout_s,
        min_off_s=safety.contactor_min_off_s,
        max_cycles_per_hour=safety.contactor_max_cycles_per_hour,
    )


def make_controller(
    config: AgentConfig, conn: ConnectorConfig, buses: dict[str, BusScheduler]
) -> ConnectorController:
    machine = PilotMachine(pilot_settings(config.profile, conn, config.safety))
    wires = board_wires(config, conn)
    pilot = PilotBoardDriver(buses[conn.pilot_board.bus], wire=wires.pilot)
    relay = RelayBoardDriver(buses[conn.relay_board.bus], wire=wires.relay)
    meter = MapMeter.from_plan(buses[conn.meter.bus], wires.meter)
    for bus, txns in ((conn.pilot_board.bus, wires.pilot.all()),
                      (conn.relay_board.bus, wires.relay.all()),
                      (conn.meter.bus, wires.meter.transactions())):
        buses[bus].declare(txns)
    timing = ConnectorTiming(
        pilot_poll_s=wires.pilot.sample.period(),
        relay_poll_s=wires.relay.feedback.period(),
        pilot_idle_poll_s=conn.pilot_board.idle_poll_ms / 1000,
        relay_idle_poll_s=conn.relay_board.idle_poll_ms / 1000,
        meter_poll_s=wires.meter.poll_s,
        heartbeat_s=wires.pilot.heartbeat.period(),
        watchdog_ms=conn.pilot_board.watchdog_ms,
        contactor_feedback_timeout_s=config.safety.contactor_feedback_timeout_ms / 1000,
    )
    return ConnectorController(conn.id, machine, pilot, relay, meter, timing)


@contextlib.asynccontextmanager
async def build_wiring(config: AgentConfig) -> AsyncIterator[Wiring]:
    """Buses started (inside the running loop, as pymodbus requires) and stopped on exit."""
    async with contextlib.AsyncExitStack() as stack:
        buses: dict[str, BusScheduler] = {}
        for name, cfg in config.buses.items():
            buses[name] = await stack.enter_async_context(make_bus(name, cfg))
        controllers: list[ConnectorHandle] = []
        for conn in config.connectors:
            if isinstance(conn, ConnectorConfig):
                controllers.append(make_controller(config, conn, buses))
            else:  # the retrofit's machine and driver load only for a config that has one
                from agent.shell.wiring_wallbox import make_wallbox

                controllers.append(make_wallbox(config, conn, buses))
        yield Wiring(buses, controllers)
