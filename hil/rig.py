"""The HIL rig: every device an ``AgentConfig`` names, simulated on virtual serial ports.

One ``PtyBridge`` (line timing, stable link ``<run_dir>/tty-<bus>``) and one ``SimulatedBus``
per serial bus; per connector a pilot board, a relay board, a meter and an EV wired together:

- the EV's resistors, diode and plug load the board's CP output; its plug's RC is the CC;
- the relay board's main contacts give the EV mains; the EV's draw is the meter's current and
  the rig integrates energy into the meter's cumulative import register;
- a 10 ms tick advances the EV and records every change on the ``Timeline`` with the rig's own
  clock (``time.monotonic``), and the bridge taps record every write frame completing on the
  virtual wire, so ``rig.timeline`` can say "CP went to 9 V at t, contactor-open completed at t'".

The rig also writes ``<run_dir>/agent.yaml``: the config with ports replaced by the links and
``state_dir`` moved into the run directory. Use ``async with Rig(config, run_dir) as rig``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse

from agent.config import AgentConfig, ConnectorConfig, MeterConfig, SerialBus
from drivers.board_maps import PilotStatus
from drivers.meters.maps import MODELS, MeterModel, model_from_config
from hil.ev import Ev, EvParams, cp_plateaus_mv, current_from_duty
from hil.meter_sim import MeterSim
from hil.modbus_server import SimulatedBus
from hil.pilot_board_sim import ADDR_DUTY, PilotBoardSim
from hil.ptybridge import LineSettings, PtyBridge
from hil.relay_board_sim import RelayBoardSim
from hil.report import Timeline

METER_PERIOD_S = 0.1
STALL_REPORT_S = 0.015
STATUS_FAULTS = {
    "rcd_trip": PilotStatus.RCD_TRIP,
    "estop": PilotStatus.ESTOP,
    "selftest_fail": PilotStatus.SELFTEST_FAIL,
}
EV_LINE_FAULTS = ("diode_short", "cp_short", "cp_break", "pe_loss", "cc_open")


@dataclass(slots=True)
class RigOptions:
    """Knobs of the simulated hardware (scenario ``rig:`` section)."""

    ev: EvParams = field(default_factory=EvParams)
    relay_close_delay_s: float = 0.030
    relay_open_delay_s: float = 0.020
    device_latency_s: float = 0.001
    tick_s: float = 0.010
    line_timing: bool = True


@dataclass(slots=True)
class ConnectorSim:
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


class Rig:
    def __init__(
        self,
        config: AgentConfig,
        run_dir: str | Path,
        *,
        options: RigOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir).resolve()
        self.options = options or RigOptions()
        self.clock = clock
        self.timeline = Timeline(clock())
        self.bridges: dict[str, PtyBridge] = {}
        self.buses: dict[str, SimulatedBus] = {}
        self.connectors: dict[int, ConnectorSim] = {}
        self._decoders: dict[str, FrameDecoder] = {}
        self._corrupt: dict[tuple[str, str], int] = {}
        self._corrupt_lock = threading.Lock()
        self._tick_task: asyncio.Task[None] | None = None
        self._started = False

    # --- paths -----------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    @property
    def patched_config_path(self) -> Path:
        return self.run_dir / "agent.yaml"

    @property
    def control_socket(self) -> Path:
        return self.state_dir / "control.sock"

    def link(self, bus: str) -> Path:
        return self.run_dir / f"tty-{bus}"

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> Rig:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.timeline = Timeline(self.clock())
        try:
            self._build_devices()
            await self._start_buses()
            self.write_patched_config()
            self._sync(self.clock())
            self._tick_task = asyncio.get_running_loop().create_task(self._tick())
            self._started = True
            # The simulated boards must answer like hardware: a full garbage collection of a
            # big host process (a long pytest run) stalled them for 100+ ms. Older objects
            # are frozen out of the collector while the rig runs.
            gc.collect()
            gc.freeze()
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        gc.unfreeze()
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        for bus in self.buses.values():
            with contextlib.suppress(Exception):
                await bus.stop()
        for bridge in self.bridges.values():
            bridge.close()
        self.buses.clear()
        self.bridges.clear()
        self._started = False

    async def __aenter__(self) -> Rig:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- accessors -------------------------------------------------------------------------

    def connector(self, connector_id: int | None = None) -> ConnectorSim:
        if connector_id is None:
            connector_id = min(self.connectors)
        return self.connectors[connector_id]

    @property
    def ev(self) -> Ev:
        return self.connector().ev

    def now(self) -> float:
        """Rig time: seconds since the rig started (the timeline's time base)."""
        return self.timeline.rel(self.clock())

    # --- actions (each returns the rig time at which the hardware changed) ------------------

    def ev_action(self, name: str, connector: int | None = None, **kw: Any) -> float:
        """Do something to the vehicle: plug_in, unplug, close_s2, open_s2, set_obc_max_a,
        set_resistors, battery_full, press_latch."""
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
        self._sync(now, cause=name)
        return event.t

    def inject(self, name: str, value: Any = True, connector: int | None = None) -> float:
        """Inject (truthy ``value``) or clear (``False``/``None``) a fault; see module docs."""
        c = self.connector(connector)
        now = self.clock()
        on = value is not False and value is not None
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
        elif name in ("slow_answers", "crc_errors", "port_vanish"):
            self._inject_bus(name, value, on, c)
        else:
            raise ValueError(f"unknown fault {name!r}")
        event = self.timeline.add("inject", now, fault=name, value=_plain(value))
        self._sync(now, cause=name)
        return event.t

    def _inject_bus(self, name: str, value: Any, on: bool, c: ConnectorSim) -> None:
        spec = value if isinstance(value, dict) else {}
        bus = str(spec.get("bus", value if isinstance(value, str) else
                            c.config.pilot_board.bus))
        if name == "slow_answers":
            latency = float(spec.get("latency_ms", 200.0)) / 1000.0 if on else 0.0
            units = [spec["unit"]] if "unit" in spec else self._units_on(bus)
            for unit in units:
                self.buses[bus].set_latency(int(unit),
                                            latency or self.options.device_latency_s)
        elif name == "crc_errors":
            direction = str(spec.get("direction", "b->a"))
            with self._corrupt_lock:
                self._corrupt[(bus, direction)] = int(spec.get("count", 3)) if on else 0
        elif on:
            self.bridges[bus].vanish()
        else:
            self.bridges[bus].restore()

    def _units_on(self, bus: str) -> list[int]:
        units = []
        for c in self.connectors.values():
            cfg = c.config
            for ref in (cfg.pilot_board, cfg.relay_board, cfg.meter):
                if ref.bus == bus:
                    units.append(ref.unit)
        return units

    # --- queries ---------------------------------------------------------------------------

    def offered_a(self, connector: int | None = None) -> float:
        """Current the board's accepted duty advertises (0 without PWM)."""
        c = self.connector(connector)
        return current_from_duty(c.pilot.duty_actual(self.clock()), self.config.profile)

    def contactor_closed(self, connector: int | None = None) -> bool:
        return self.connector(connector).relay.contacts_closed(self.clock())

    # --- patched config --------------------------------------------------------------------

    def patched_config(self) -> dict[str, Any]:
        data: dict[str, Any] = self.config.model_dump(mode="json")
        for name, bus in data["buses"].items():
            if bus.get("kind") == "serial":
                bus["port"] = str(self.link(name))
        data["state_dir"] = str(self.state_dir)
        data["status_file"] = None
        return data

    def write_patched_config(self) -> Path:
        path = self.patched_config_path
        path.write_text(yaml.safe_dump(self.patched_config(), sort_keys=False))
        return path

    # --- wiring ----------------------------------------------------------------------------

    def _build_devices(self) -> None:
        opts = self.options
        for cfg in self.config.connectors:
            ev = Ev(params=copy.deepcopy(opts.ev))
            ev.params.profile = self.config.profile
            pilot = PilotBoardSim(unit=cfg.pilot_board.unit, clock=self.clock,
                                  on_write=self._board_writer(cfg.id))
            relay = RelayBoardSim(unit=cfg.relay_board.unit, clock=self.clock,
                                  close_delay_s=opts.relay_close_delay_s,
                                  open_delay_s=opts.relay_open_delay_s)
            meter = MeterSim(_meter_model(cfg.meter), unit=cfg.meter.unit)
            self.connectors[cfg.id] = ConnectorSim(cfg, ev, pilot, relay, meter)

    async def _start_buses(self) -> None:
        for name, bus_cfg in self.config.buses.items():
            if not isinstance(bus_cfg, SerialBus):
                raise ValueError(f"bus {name!r}: the rig simulates serial buses only")
            devices = []
            for c in self.connectors.values():
                cfg = c.config
                if cfg.pilot_board.bus == name:
                    devices.append(c.pilot.sim_device())
                if cfg.relay_board.bus == name:
                    devices.append(c.relay.sim_device())
                if cfg.meter.bus == name:
                    devices.append(c.meter.device)
            line = LineSettings(bus_cfg.baudrate, bus_cfg.parity, bus_cfg.stopbits)
            self._decoders[name] = FrameDecoder()
            bridge = PtyBridge(line, link_a=str(self.link(name)), timing=self.options.line_timing,
                               tap=self._tap_for(name), mutate=self._mutate_for(name))
            self.bridges[name] = bridge.start()
            server = SimulatedBus(devices, port=bridge.path_b, line=line)
            self.buses[name] = server
            for c in self.connectors.values():
                if c.config.meter.bus == name:
                    c.meter.attach(server)
            await server.start()
            for unit in self._units_on(name):
                server.set_latency(unit, self.options.device_latency_s)

    def _board_writer(self, connector_id: int) -> Callable[[str, int, float], None]:
        def on_write(register: str, value: int, now: float) -> None:
            if register in ("duty_cmd", "fault_reset", "watchdog_ms"):
                self.timeline.add("board_write", now, connector=connector_id,
                                  register=register, value=value)
        return on_write

    def _tap_for(self, bus: str) -> Callable[[str, float, bytes], None]:
        def tap(direction: str, t_done: float, data: bytes) -> None:
            for frame in self._decoders[bus].feed(direction, t_done, data):
                self._record_frame(bus, frame)
        return tap

    def _mutate_for(self, bus: str) -> Callable[[str, bytes], bytes | None]:
        def mutate(direction: str, data: bytes) -> bytes | None:
            with self._corrupt_lock:
                left = self._corrupt.get((bus, direction), 0)
                if left <= 0 or not data:
                    return data
                self._corrupt[(bus, direction)] = left - 1
            return data[:-1] + bytes([data[-1] ^ 0xFF])  # damage the CRC's last byte
        return mutate

    def _record_frame(self, bus: str, frame: dict[str, Any]) -> None:
        t = frame.pop("t")
        what = self._classify(bus, frame)
        if what is not None:
            frame["what"] = what
        if what is not None or frame.get("exception") is not None or frame.get("bad"):
            self.timeline.add("frame", t, bus=bus, **frame)
        else:
            self.timeline.count_frame(bus, frame["dir"])

    def _classify(self, bus: str, frame: dict[str, Any]) -> str | None:
        if frame.get("dir") != "a->b" or frame.get("bad"):
            return None
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

    # --- simulation tick -------------------------------------------------------------------

    async def _tick(self) -> None:
        last = self.clock()
        while True:
            await asyncio.sleep(self.options.tick_s)
            now = self.clock()
            if now - last > self.options.tick_s + STALL_REPORT_S:  # the rig's loop was late
                self.timeline.add("rig_stall", now, late_ms=round((now - last) * 1000, 1))
            last = now
            self._sync(now)
            for c in self.connectors.values():
                if now - c.last_meter_t >= METER_PERIOD_S:
                    c.last_meter_t = now
                    await self._push_meter(c)

    def _sync(self, now: float, cause: str | None = None) -> None:
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

    async def _push_meter(self, c: ConnectorSim) -> None:
        current = c.ev.current_a()
        volts = c.config.nominal_voltage_v
        await c.meter.set_measurements(
            voltage_v=volts, current_a=current, power_w=volts * current * c.config.phases,
            energy_import_wh=c.energy_wh)


def _meter_model(cfg: MeterConfig) -> MeterModel:
    if cfg.model == "custom":
        return model_from_config("custom", [r.model_dump() for r in cfg.registers or []])
    try:
        return MODELS[cfg.model]
    except KeyError as exc:
        raise ValueError(f"meter model {cfg.model!r}: the rig knows {sorted(MODELS)}") from exc


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | dict | list) or value is None \
        else str(value)


class FrameDecoder:
    """Reassemble RTU frames from the bridge's chunks (per direction) with pymodbus's framer.

    Requests (``a->b``) are decoded as a server would, answers (``b->a``) as a client would.
    A gap of more than ``FRAME_GAP_S`` between chunks starts a new frame, like t3.5 on a line.
    """

    FRAME_GAP_S = 0.02

    def __init__(self) -> None:
        self._framers = {
            "a->b": FramerRTU(DecodePDU(is_server=True)),
            "b->a": FramerRTU(DecodePDU(is_server=False)),
        }
        self._buf = {"a->b": b"", "b->a": b""}
        self._last = {"a->b": 0.0, "b->a": 0.0}

    def feed(self, direction: str, t: float, data: bytes) -> list[dict[str, Any]]:
        if t - self._last[direction] > self.FRAME_GAP_S:
            self._buf[direction] = b""
        self._last[direction] = t
        buf = self._buf[direction] + data
        out: list[dict[str, Any]] = []
        while buf:
            try:
                used, pdu = self._framers[direction].handleFrame(buf, 0, 0)
            except Exception:  # undecodable PDU body
                used, pdu = len(buf), None
            if pdu is None:
                if used:  # consumed without a frame: CRC error or garbage
                    out.append({"t": t, "dir": direction, "bad": True, "len": len(buf)})
                    buf = b""
                break
            buf = buf[used:]
            out.append(_describe(direction, t, pdu))
        self._buf[direction] = buf[-512:]
        return out


def _describe(direction: str, t: float, pdu: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"t": t, "dir": direction, "unit": int(pdu.dev_id),
                             "fc": int(pdu.function_code) & 0x7F}
    if isinstance(pdu, ExceptionResponse):
        frame["exception"] = int(pdu.exception_code)
        return frame
    frame["address"] = int(getattr(pdu, "address", 0))
    if direction == "a->b" and frame["fc"] in (5, 15):
        frame["values"] = [int(bool(b)) for b in (pdu.bits or [])]
    elif direction == "a->b" and frame["fc"] in (6, 16):
        frame["values"] = [int(r) for r in (pdu.registers or [])]
    return frame
