"""Our own boards on the rig: per connector a pilot board, a relay board, a meter and an EV.

- the EV's resistors, diode and plug load the board's CP output; its plug's RC is the CC;
- the relay board's main contacts give the EV mains; the EV's draw is the meter's current and
  the rig integrates energy into the meter's cumulative import register;
- every register the agent writes to the pilot board (``board_write``) and every classified
  frame (``duty``, ``contactor_open``/``_close``, ``lock``/``unlock``) goes on the timeline.

Faults: the EV's line faults (``diode_short``, ``cp_short``, ``cp_break``, ``pe_loss``,
``cc_open``), ``overcurrent``, ``s2_open``, ``unplug_under_load``, the board's status causes
(``rcd_trip``, ``estop``, ``selftest_fail``, ``overtemp``), ``contactor_weld``,
``contactor_no_close``, ``pilot_freeze``, ``meter_silence``, ``meter_freeze``; and the wire's
(``hil.simrig``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.config import ConnectorConfig
from drivers.board_maps import PilotStatus
from hil.ev import Ev, cp_plateaus_mv, current_from_duty
from hil.meter_sim import MeterSim
from hil.modbus_server import SimulatedBus
from hil.pilot_board_sim import ADDR_DUTY, PilotBoardSim
from hil.relay_board_sim import RelayBoardSim
from hil.simrig import SimRig, meter_model

METER_PERIOD_S = 0.1
STATUS_FAULTS = {
    "rcd_trip": PilotStatus.RCD_TRIP,
    "estop": PilotStatus.ESTOP,
    "selftest_fail": PilotStatus.SELFTEST_FAIL,
}
EV_LINE_FAULTS = ("diode_short", "cp_short", "cp_break", "pe_loss", "cc_open")


@dataclass(slots=True)
class BoardConnector:
    """The simulated hardware of one connector."""

    config: ConnectorConfig
    ev: Ev
    pilot: PilotBoardSim
    relay: RelayBoardSim
    meter: MeterSim
    energy_wh: float = 0.0
    last_t: float | None = None
    last_meter_t: float = -1.0
    seen: dict[str, Any] = field(default_factory=dict)


class BoardRig(SimRig):
    kind = "boards"

    connectors: dict[int, BoardConnector]

    def connector(self, connector_id: int | None = None) -> BoardConnector:
        return self.connectors[min(self.connectors) if connector_id is None else connector_id]

    def connector_ids(self) -> list[int]:
        return sorted(self.connectors)

    def control_bus(self, connector: int | None) -> str:
        return self.connector(connector).config.pilot_board.bus

    def pilot_unit(self) -> tuple[str, int] | None:
        ref = self.connector().config.pilot_board
        return ref.bus, ref.unit

    # --- wiring ------------------------------------------------------------------------------

    def build(self) -> None:
        opts = self.options
        self.connectors = {}
        for cfg in self.config.board_connectors():
            ev = Ev(params=copy.deepcopy(opts.ev))
            ev.params.profile = self.config.profile
            pilot = PilotBoardSim(unit=cfg.pilot_board.unit, clock=self.clock,
                                  on_write=self._board_writer(cfg.id))
            relay = RelayBoardSim(unit=cfg.relay_board.unit, clock=self.clock,
                                  close_delay_s=opts.relay_close_delay_s,
                                  open_delay_s=opts.relay_open_delay_s)
            meter = MeterSim(meter_model(cfg.meter), unit=cfg.meter.unit)
            self.connectors[cfg.id] = BoardConnector(cfg, ev, pilot, relay, meter)

    def devices_on(self, bus: str) -> list[Any]:
        devices: list[Any] = []
        for c in self.connectors.values():
            if c.config.pilot_board.bus == bus:
                devices.append(c.pilot.sim_device())
            if c.config.relay_board.bus == bus:
                devices.append(c.relay.sim_device())
            if c.config.meter.bus == bus:
                devices.append(c.meter.device)
        return devices

    def units_on(self, bus: str) -> list[int]:
        return [ref.unit for c in self.connectors.values()
                for ref in (c.config.pilot_board, c.config.relay_board, c.config.meter)
                if ref.bus == bus]

    def attach(self, bus: str, server: SimulatedBus) -> None:
        for c in self.connectors.values():
            if c.config.meter.bus == bus:
                c.meter.attach(server)

    def _board_writer(self, connector_id: int) -> Callable[[str, int, float], None]:
        def on_write(register: str, value: int, now: float) -> None:
            if register in ("duty_cmd", "fault_reset", "watchdog_ms"):
                self.timeline.add("board_write", now, connector=connector_id,
                                  register=register, value=value)
        return on_write

    def classify(self, bus: str, frame: dict[str, Any]) -> str | None:
        fc, unit, addr = frame.get("fc"), frame.get("unit"), frame.get("address")
        values = frame.get("values") or []
        for c in self.connectors.values():
            relay, pilot = c.config.relay_board, c.config.pilot_board
            if relay.bus == bus and unit == relay.unit and fc in (5, 15) and values:
                if addr == relay.contactor_coil:
                    return "contactor_close" if values[0] else "contactor_open"
                if addr == relay.lock_coil:
                    return "lock" if values[0] else "unlock"
            if pilot.bus == bus and unit == pilot.unit and fc in (6, 16) and addr == ADDR_DUTY:
                return "duty"
        return None

    # --- actions -----------------------------------------------------------------------------

    def ev_action(self, name: str, connector: int | None = None, **kw: Any) -> float:
        """plug_in, unplug, close_s2, open_s2, set_obc_max_a, set_resistors, battery_full,
        press_latch."""
        c = self.connector(connector)
        now = self.clock()
        ev = c.ev
        if name == "plug_in":
            for key in ("has_s2", "r2_ohm", "r3_ohm", "obc_max_a", "follow_delay_s"):
                if key in kw:
                    setattr(ev.params, key, kw.pop(key))
            ev.plug_in(now, float(kw.pop("cable_a", 32.0)), rc_ohm=kw.pop("rc_ohm", None),
                       wants_charge=bool(kw.pop("wants_charge", False)))
        elif name == "unplug":
            ev.unplug(now)
        elif name == "close_s2":
            ev.close_s2(now)
        elif name == "open_s2":
            ev.open_s2(now)
        elif name == "set_obc_max_a":
            ev.set_obc_max_a(now, float(kw.pop("current_a")))
        elif name == "set_resistors":
            ev.set_resistors(kw.pop("r2_ohm", None), kw.pop("r3_ohm", None))
        elif name == "battery_full":
            ev.battery_full(now, kw.pop("taper_s", None))
        elif name == "press_latch":
            ev.latch_pressed = bool(kw.pop("pressed", True))
        else:
            raise ValueError(f"unknown EV action {name!r}")
        if kw:
            raise ValueError(f"EV action {name}: unknown arguments {sorted(kw)}")
        event = self.timeline.add("ev", now, action=name, connector=c.config.id)
        self.sync(now, cause=name)
        return event.t

    def inject_device(self, name: str, value: Any, on: bool, connector: int | None) -> bool:
        c = self.connector(connector)
        now = self.clock()
        ev, pilot, relay = c.ev, c.pilot, c.relay
        if name in EV_LINE_FAULTS:
            setattr(ev.faults, name, on)
        elif name == "overcurrent":
            amps = value.get("current_a", True) if isinstance(value, dict) else value
            if not on:
                ev.faults.overcurrent_a = None
            elif isinstance(amps, int | float) and not isinstance(amps, bool):
                ev.faults.overcurrent_a = float(amps)
            else:  # no figure given: the OBC's maximum, whatever the duty says
                ev.faults.overcurrent_a = ev.params.obc_max_a
        elif name == "s2_open":
            ev.open_s2(now) if on else ev.close_s2(now)
        elif name == "unplug_under_load":
            ev.unplug(now)
        elif name in STATUS_FAULTS:
            pilot.set_cause(STATUS_FAULTS[name], on)
        elif name == "overtemp":
            hot = pilot.overtemp_c + 10.0
            pilot.temperature_c = (float(value) if isinstance(value, int | float)
                                   and value is not True else hot) if on else 25.0
        elif name == "contactor_weld":
            relay.welded = on
        elif name == "contactor_no_close":
            relay.no_close = on
        elif name == "pilot_freeze":
            pilot.frozen = on
        elif name == "meter_silence":
            self.buses[c.config.meter.bus].set_silent(c.config.meter.unit, on)
        elif name == "meter_freeze":
            c.meter.freeze(on)
        else:
            return False
        return True

    # --- queries -----------------------------------------------------------------------------

    def probe(self, connector: int | None = None) -> dict[str, Any]:
        c = self.connector(connector)
        now = self.clock()
        duty = c.pilot.duty_actual(now)
        return {
            "connector": c.config.id, "duty": duty,
            "offered_a": current_from_duty(duty, self.config.profile),
            "pwm_on": c.pilot.pwm_on(now), "cp_v": c.pilot.cp_mv(now)[0] / 1000.0,
            "current_a": c.ev.current_a(), "contactor": c.relay.contacts_closed(now),
            "lock": c.relay.locked(now), "plugged": c.ev.plugged, "s2_closed": c.ev.s2_closed,
            "energy_wh": c.energy_wh,
        }

    # --- simulation --------------------------------------------------------------------------

    def sync(self, now: float, cause: str | None = None) -> None:
        for c in self.connectors.values():
            duty = c.pilot.duty_actual(now)
            mains = c.relay.contacts_closed(now)
            current = c.ev.update(now, duty, mains)
            load = c.ev.pilot_load()
            c.pilot.line = load
            c.pilot.cc_ohm = c.ev.cc_ohm()
            c.pilot.set_cause(PilotStatus.PE_LOSS, c.ev.faults.pe_loss)
            volts = c.config.nominal_voltage_v
            if c.last_t is not None and mains:
                c.energy_wh += volts * current * c.config.phases * (now - c.last_t) / 3600.0
            c.last_t = now
            observed = {
                "cp_level_v": cp_plateaus_mv(load, 1000)[0] / 1000.0,
                "cc_ohm": c.pilot.cc_ohm,
                "status": int(c.pilot.active_causes(now)),
                "cp_v": c.pilot.cp_mv(now)[0] / 1000.0,
                "duty": duty,
                "offered_a": current_from_duty(duty, self.config.profile),
                "current_a": current,
                "contactor": mains,
                "s2": c.ev.s2_closed,
                "lock": c.relay.locked(now),
            }
            for key, value in observed.items():
                if c.seen.get(key, object()) != value:
                    c.seen[key] = value
                    self.timeline.add("signal", now, connector=c.config.id, name=key,
                                      value=value, cause=cause)

    async def on_tick(self, now: float) -> None:
        for c in self.connectors.values():
            if now - c.last_meter_t >= METER_PERIOD_S:
                c.last_meter_t = now
                current = c.ev.current_a()
                volts = c.config.nominal_voltage_v
                await c.meter.set_measurements(
                    voltage_v=volts, current_a=current,
                    power_w=volts * current * c.config.phases, energy_import_wh=c.energy_wh)
