"""A retrofitted wallbox on the rig: per connector a ``WallboxSim`` of its profile, a vehicle
and, if configured, a meter.

**A bench fact this rig designs around:** a pseudo-terminal has no UART, so parity means
nothing to it (depending on the kernel, pyserial's ``parity="E"`` on a pty fails with EINVAL or
is silently dropped). The bridge therefore keeps the wallbox's 8E1 line *timing* in its model,
and the rig hands the agent a bench config whose serial buses say ``parity: N`` for the pty,
the way it already patches port paths (``hil.simrig.patched_config``). On a real RS-485 adapter the
configured parity is used as written; nothing in agent/ or drivers/ knows about the bench.

Recorded on the timeline (rig clock): the vehicle's actions, every register the agent writes
(``wallbox_write`` with the current the wallbox then offers), every wallbox frame on the wire
(``frame``, ``what: wallbox_current`` / ``wallbox_enable``), and the signals of the plot
(``cp_v`` nominal for the letter, ``offered_a``, ``current_a``, ``contactor``) plus
``failsafe`` (the wallbox's watchdog expired and its fail-safe current applies).

Faults: ``wallbox_silent``, ``wallbox_slow`` ({latency_ms}), ``wallbox_exception`` (code),
``wallbox_reset``, ``wallbox_state`` (a raw state value, None to end), ``standby_sleep``
(seconds, None to end); and the wire's (``hil.simrig``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.config_wallbox import WallboxConnectorConfig
from agent.pilot import PROFILES, current_to_duty
from hil.meter_sim import MeterSim
from hil.modbus_server import SimulatedBus
from hil.simrig import SimRig, meter_model
from hil.wallbox_sim import WallboxQuirks, WallboxSim

NOMINAL_CP_V = {"A": 12.0, "B": 9.0, "C": 6.0, "D": 3.0, "E": 0.0, "F": -12.0}


@dataclass(slots=True)
class RetrofitEv:
    """The vehicle behind a wallbox: plugged, S2, and an on-board charger that takes what the
    wallbox's pilot offers (up to its own maximum)."""

    plugged: bool = False
    s2_closed: bool = False
    obc_max_a: float = 32.0
    draw_a: float = 0.0

    def current_a(self) -> float:
        return self.draw_a

    def letter(self) -> str:
        if not self.plugged:
            return "A"
        return "C" if self.s2_closed else "B"


@dataclass(slots=True)
class WallboxPilot:
    """The wallbox's own pilot output, as the runner's pilot probes read a pilot board."""

    sim: WallboxSim
    profile: str

    def duty_actual(self, now: float) -> int:
        duty = current_to_duty(PROFILES[self.profile], self.sim.offered_a(now))
        return 1000 if duty is None or self.sim.vehicle == "A" else duty

    def cp_mv(self, now: float) -> tuple[int, int]:
        return int(NOMINAL_CP_V.get(self.sim.vehicle, 0.0) * 1000), -12000


@dataclass(slots=True)
class WallboxConnectorSim:
    config: WallboxConnectorConfig
    sim: WallboxSim
    ev: RetrofitEv
    pilot: WallboxPilot
    meter: MeterSim | None = None
    energy_wh: float = 0.0
    last_t: float | None = None
    seen: dict[str, Any] = field(default_factory=dict)


class WallboxRig(SimRig):
    kind = "wallbox"

    connectors: dict[int, WallboxConnectorSim]
    quirks = WallboxQuirks()

    def connector(self, connector_id: int | None = None) -> WallboxConnectorSim:
        return self.connectors[min(self.connectors) if connector_id is None else connector_id]

    def connector_ids(self) -> list[int]:
        return sorted(self.connectors)

    def control_bus(self, connector: int | None) -> str:
        return self.connector(connector).config.wallbox.bus

    # --- wiring ------------------------------------------------------------------------------

    def build(self) -> None:
        self.connectors = {}
        for cfg in self.config.wallbox_connectors():
            profile = cfg.wallbox.resolve()
            quirks = WallboxQuirks(self.quirks.standby_sleep_s, self.quirks.enforce_gap)
            sim = WallboxSim(profile, unit=cfg.wallbox.unit, clock=self.clock, quirks=quirks,
                             voltage_v=cfg.nominal_voltage_v, phases=cfg.phases,
                             on_write=self._writer(cfg.id))
            meter = MeterSim(meter_model(cfg.meter), unit=cfg.meter.unit) if cfg.meter else None
            self.connectors[cfg.id] = WallboxConnectorSim(
                cfg, sim, RetrofitEv(), WallboxPilot(sim, self.config.profile), meter)

    def _meter_on(self, c: WallboxConnectorSim, bus: str) -> bool:
        return c.meter is not None and c.config.meter is not None and c.config.meter.bus == bus

    def devices_on(self, bus: str) -> list[Any]:
        devices: list[Any] = []
        for c in self.connectors.values():
            if c.config.wallbox.bus == bus:
                devices.append(c.sim.sim_device())
            if self._meter_on(c, bus):
                assert c.meter is not None
                devices.append(c.meter.device)
        return devices

    def units_on(self, bus: str) -> list[int]:
        return [c.config.wallbox.unit for c in self.connectors.values()
                if c.config.wallbox.bus == bus]

    def attach(self, bus: str, server: SimulatedBus) -> None:
        for c in self.connectors.values():
            if self._meter_on(c, bus):
                assert c.meter is not None
                c.meter.attach(server)

    def _writer(self, cid: int) -> Callable[[str, int, float], None]:
        def on_write(register: str, value: int, now: float) -> None:
            c = self.connectors[cid]
            self.timeline.add("wallbox_write", now, connector=cid, register=register,
                              value=value, offered_a=c.sim.commanded_a())
        return on_write

    def classify(self, bus: str, frame: dict[str, Any]) -> str | None:
        for c in self.connectors.values():
            wb = c.config.wallbox
            p = c.sim.profile
            if wb.bus != bus or frame.get("unit") != wb.unit:
                continue
            if frame.get("fc") in (6, 16) and frame.get("address") == p.current.address:
                return "wallbox_current"
            reg = p.disable.register
            if reg is not None and frame.get("address") == reg.address and \
                    frame.get("fc") in (5, 6, 15, 16):
                return "wallbox_enable"
        return None

    # --- actions -----------------------------------------------------------------------------

    def ev_action(self, name: str, connector: int | None = None, **kw: Any) -> float:
        """plug_in, unplug, close_s2, open_s2, set_obc_max_a (as on the boards' rig)."""
        c = self.connector(connector)
        now = self.clock()
        kw.pop("cable_a", None)  # the wallbox reads its own cable
        if name == "plug_in":
            c.ev.plugged = True
            c.ev.obc_max_a = float(kw.pop("obc_max_a", c.ev.obc_max_a))
        elif name in ("unplug", "unplug_under_load"):
            c.ev.plugged = c.ev.s2_closed = False
        elif name == "close_s2":
            c.ev.s2_closed = True
        elif name == "open_s2":
            c.ev.s2_closed = False
        elif name == "set_obc_max_a":
            c.ev.obc_max_a = float(kw.pop("current_a"))
        else:
            raise ValueError(f"unknown EV action {name!r} on a wallbox")
        if kw:
            raise ValueError(f"EV action {name}: unknown arguments {sorted(kw)}")
        c.sim.set_vehicle(now, c.ev.letter())
        event = self.timeline.add("ev", now, action=name, connector=c.config.id)
        self.sync(now, cause=name)
        return event.t

    def inject_device(self, name: str, value: Any, on: bool, connector: int | None) -> bool:
        c = self.connector(connector)
        now = self.clock()
        wb = c.config.wallbox
        bus = self.buses[wb.bus]
        if name == "wallbox_silent":
            bus.set_silent(wb.unit, on)
        elif name == "wallbox_slow":
            ms = value.get("latency_ms", 200.0) if isinstance(value, dict) else 200.0
            bus.set_latency(wb.unit, float(ms) / 1000 if on else self.options.device_latency_s)
        elif name == "wallbox_exception":
            bus.set_exception(wb.unit, (4 if value is True else int(value)) if on else None)
        elif name == "wallbox_reset":
            c.sim.reset(now)
        elif name == "wallbox_state":
            c.sim.state_override = int(value) if on and value is not True else None
        elif name == "standby_sleep":
            c.sim.quirks.standby_sleep_s = float(value) if on and value is not True else (
                5.0 if on else None)
        else:
            return False
        return True

    # --- queries -----------------------------------------------------------------------------

    def probe(self, connector: int | None = None) -> dict[str, Any]:
        c = self.connector(connector)
        now = self.clock()
        offered = c.sim.offered_a(now)
        return {
            "connector": c.config.id, "duty": c.pilot.duty_actual(now), "offered_a": offered,
            "pwm_on": offered > 0 and c.sim.vehicle != "A",
            "cp_v": NOMINAL_CP_V.get(c.sim.vehicle, 0.0), "current_a": c.ev.draw_a,
            "contactor": c.ev.letter() in ("C", "D") and offered > 0, "lock": False,
            "plugged": c.ev.plugged, "s2_closed": c.ev.s2_closed, "energy_wh": c.energy_wh,
            "failsafe": c.sim.failsafe_active(now), "memory": dict(c.sim.memory),
            "watchdog_s": c.sim.watchdog_s(),
        }

    # --- simulation --------------------------------------------------------------------------

    async def on_tick(self, now: float) -> None:
        for c in self.connectors.values():
            if c.meter is not None:
                await c.meter.set_measurements(
                    voltage_v=c.config.nominal_voltage_v, current_a=c.ev.draw_a,
                    power_w=c.config.nominal_voltage_v * c.ev.draw_a * c.config.phases,
                    energy_import_wh=c.energy_wh)

    def sync(self, now: float, cause: str | None = None) -> None:
        for c in self.connectors.values():
            offered = c.sim.offered_a(now)
            charging = c.ev.letter() in ("C", "D") and offered > 0
            c.ev.draw_a = min(offered, c.ev.obc_max_a) if charging else 0.0
            c.sim.current_draw_a = c.ev.draw_a
            if c.last_t is not None and charging:
                c.energy_wh += (c.config.nominal_voltage_v * c.ev.draw_a * c.config.phases
                                * (now - c.last_t) / 3600.0)
            c.sim.energy_wh = c.energy_wh
            c.last_t = now
            observed = {
                "cp_v": NOMINAL_CP_V.get(c.sim.vehicle, 0.0),
                "offered_a": offered,
                "current_a": c.ev.draw_a,
                "contactor": charging,
                "failsafe": c.sim.failsafe_active(now),
                "s2": c.ev.s2_closed,
            }
            for key, value in observed.items():
                if c.seen.get(key, object()) != value:
                    c.seen[key] = value
                    self.timeline.add("signal", now, connector=c.config.id, name=key,
                                      value=value, cause=cause)
