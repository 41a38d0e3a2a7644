"""Build buses, drivers, pilot machines and controllers from a validated config.

The only place where config keys meet constructors. A driver name in the config maps to a class
through the registries (``drivers.meters.METER_MODELS``); nothing here knows whether a port is a
real RS-485 adapter or a HIL pty.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from agent.busplan_wallbox import ENERGY_PERIOD_S, failsafe_a
from agent.config import (
    AgentConfig,
    Bus,
    ConnectorConfig,
    SafetyConfig,
    SerialBus,
    WallboxConnectorConfig,
)
from agent.errors import driver_config_as_config_error
from agent.pilot import PROFILES, CpLevel, PilotMachine, PilotSettings
from agent.shell.connector import ConnectorController, ConnectorTiming
from agent.shell.handle import ConnectorHandle, HardwareInfo
from agent.shell.wallbox_connector import WallboxConnector, WallboxTiming
from agent.wallbox.machine import WallboxMachine, WallboxSettings
from agent.wallbox.mapping import max_current_a
from drivers.bus import BusScheduler
from drivers.meters import meter_from_config
from drivers.pilot_board import PilotBoardDriver
from drivers.relay_board import RelayBoardDriver
from drivers.wallbox.driver import WallboxDriver


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
    pilot = PilotBoardDriver(buses[conn.pilot_board.bus], conn.pilot_board.unit)
    relay_cfg = conn.relay_board
    relay = RelayBoardDriver(
        buses[relay_cfg.bus],
        relay_cfg.unit,
        contactor_coil=relay_cfg.contactor_coil,
        lock_coil=relay_cfg.lock_coil,
        contactor_feedback_input=relay_cfg.contactor_feedback_input,
        lock_feedback_input=relay_cfg.lock_feedback_input,
    )
    meter_bus = config.buses[conn.meter.bus]
    with driver_config_as_config_error():
        meter = meter_from_config(
            conn.meter.model,
            [r.model_dump() for r in conn.meter.registers] if conn.meter.registers else None,
            bus=buses[conn.meter.bus],
            unit=conn.meter.unit,
            max_words_per_read=meter_bus.max_words_per_read,
        )
    timing = ConnectorTiming(
        pilot_poll_s=conn.pilot_board.poll_ms / 1000,
        relay_poll_s=relay_cfg.poll_ms / 1000,
        pilot_idle_poll_s=conn.pilot_board.idle_poll_ms / 1000,
        relay_idle_poll_s=relay_cfg.idle_poll_ms / 1000,
        meter_poll_s=conn.meter.poll_ms / 1000,
        heartbeat_s=conn.pilot_board.heartbeat_ms / 1000,
        watchdog_ms=conn.pilot_board.watchdog_ms,
        contactor_feedback_timeout_s=config.safety.contactor_feedback_timeout_ms / 1000,
    )
    return ConnectorController(conn.id, machine, pilot, relay, meter, timing)


def make_wallbox(
    config: AgentConfig, conn: WallboxConnectorConfig, buses: dict[str, BusScheduler]
) -> WallboxConnector:
    wb = conn.wallbox
    profile = wb.resolve()
    machine = WallboxMachine(WallboxSettings(profile, conn.rated_current_a, conn.authorisation,
                                             lost_s=wb.lost_ms / 1000))
    driver = WallboxDriver(buses[wb.bus], wb.unit, profile, phases=conn.phases,
                           watchdog_s=wb.watchdog_s, failsafe_a=failsafe_a(config, conn))
    meter = None
    energy_s = ENERGY_PERIOD_S
    if conn.meter is not None:
        with driver_config_as_config_error():
            meter = meter_from_config(
                conn.meter.model,
                [r.model_dump() for r in conn.meter.registers] if conn.meter.registers else None,
                bus=buses[conn.meter.bus], unit=conn.meter.unit,
                max_words_per_read=config.buses[conn.meter.bus].max_words_per_read)
        energy_s = conn.meter.poll_ms / 1000
    hardware = HardwareInfo("wallbox", "wallbox", profile.name,
                            max_current_a(profile, conn.rated_current_a))
    timing = WallboxTiming(poll_s=wb.poll_ms / 1000, verify_s=wb.verify_s, energy_s=energy_s)
    return WallboxConnector(conn.id, machine, driver, meter, timing, hardware)


@contextlib.asynccontextmanager
async def build_wiring(config: AgentConfig) -> AsyncIterator[Wiring]:
    """Buses started (inside the running loop, as pymodbus requires) and stopped on exit."""
    async with contextlib.AsyncExitStack() as stack:
        buses: dict[str, BusScheduler] = {}
        for name, cfg in config.buses.items():
            buses[name] = await stack.enter_async_context(make_bus(name, cfg))
        controllers: list[ConnectorHandle] = [
            make_controller(config, conn, buses) if isinstance(conn, ConnectorConfig)
            else make_wallbox(config, conn, buses) for conn in config.connectors]
        yield Wiring(buses, controllers)
