"""The HIL rig of a retrofit: every wallbox a config names, simulated on virtual serial ports.

Per serial bus one ``PtyBridge`` (line timing at the bus's configured baud, parity and stop
bits: a Heidelberg's 19200 8E1 is 11 bits a character on the virtual wire) and one
``SimulatedBus``; per wallbox connector a ``WallboxSim`` of its profile and a vehicle.

**A bench fact this rig designs around:** a pseudo-terminal has no UART, so parity means
nothing to it (depending on the kernel, pyserial's ``parity="E"`` on a pty fails with EINVAL or
is silently dropped). The bridge therefore keeps the wallbox's 8E1 line *timing* in its model,
and the rig hands the agent a bench config whose serial buses say ``parity: N`` for the pty,
the way it already patches port paths (``<run_dir>/agent.yaml``). On a real RS-485 adapter the
configured parity is used as written; nothing in agent/ or drivers/ knows about the bench.

Recorded on the timeline (rig clock): the vehicle's actions, every register the agent writes
(``wallbox_write`` with the current the wallbox then offers), every wallbox frame on the wire
(``frame``, ``what: wallbox_current`` / ``wallbox_enable``), and the signals of the plot
(``cp_v`` nominal for the letter, ``offered_a``, ``current_a``, ``contactor``) plus
``failsafe`` (the wallbox's watchdog expired and its fail-safe current applies).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.config import AgentConfig, SerialBus, WallboxConnectorConfig
from agent.pilot import PROFILES, current_to_duty
from hil.meter_sim import MeterSim
from hil.modbus_server import SimulatedBus
from hil.ptybridge import LineSettings, PtyBridge
from hil.report import Timeline
from hil.rig import FrameDecoder, RigOptions, _meter_model, _plain
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


class WallboxRig:
    """Same life cycle and queries as ``hil.rig.Rig`` for configs with wallbox connectors."""

    kind = "wallbox"

    def __init__(self, config: AgentConfig, run_dir: str | Path, *,
                 options: RigOptions | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 quirks: WallboxQuirks | None = None) -> None:
        if config.board_connectors():
            raise ValueError("WallboxRig simulates wallbox connectors only (hil.rig for boards)")
        self.config = config
        self.run_dir = Path(run_dir).resolve()
        self.options = options or RigOptions()
        self.clock = clock
        self.quirks = quirks or WallboxQuirks()
        self.timeline = Timeline(clock())
        self.bridges: dict[str, PtyBridge] = {}
        self.buses: dict[str, SimulatedBus] = {}
        self.connectors: dict[int, WallboxConnectorSim] = {}
        self._decoders: dict[str, FrameDecoder] = {}
        self._cut: set[str] = set()
        self._cut_lock = threading.Lock()
        self._tick_task: asyncio.Task[None] | None = None

    # --- paths (as hil.rig.Rig) ------------------------------------------------------------

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

    async def start(self) -> WallboxRig:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.timeline = Timeline(self.clock())
        try:
            self._build()
            await self._start_buses()
            self.write_patched_config()
            self._sync(self.clock())
            self._tick_task = asyncio.get_running_loop().create_task(self._tick())
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
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

    async def __aenter__(self) -> WallboxRig:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- accessors -------------------------------------------------------------------------

    def connector(self, connector_id: int | None = None) -> WallboxConnectorSim:
        return self.connectors[min(self.connectors) if connector_id is None else connector_id]

    @property
    def ev(self) -> RetrofitEv:
        return self.connector().ev

    def now(self) -> float:
        return self.timeline.rel(self.clock())

    def offered_a(self, connector: int | None = None) -> float:
        """What the wallbox's own pilot offers now (0 while paused)."""
        return self.connector(connector).sim.offered_a(self.clock())

    def contactor_closed(self, connector: int | None = None) -> bool:
        """The wallbox's contactor: closed while the vehicle asks (C) and it offers current."""
        c = self.connector(connector)
        return c.ev.letter() in ("C", "D") and c.sim.offered_a(self.clock()) > 0

    # --- actions ---------------------------------------------------------------------------

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
        self._sync(now, cause=name)
        return event.t

    def inject(self, name: str, value: Any = True, connector: int | None = None) -> float:
        """wallbox_silent, wallbox_slow ({latency_ms}), wallbox_exception (code),
        wallbox_reset, wallbox_state (a raw state value, None to end), bus_cut, standby_sleep
        (seconds, None to end)."""
        c = self.connector(connector)
        now = self.clock()
        on = value is not False and value is not None
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
        elif name == "bus_cut":
            with self._cut_lock:
                (self._cut.add if on else self._cut.discard)(wb.bus)
        elif name == "standby_sleep":
            c.sim.quirks.standby_sleep_s = float(value) if on and value is not True else (
                5.0 if on else None)
        else:
            raise ValueError(f"unknown wallbox fault {name!r}")
        event = self.timeline.add("inject", now, fault=name, value=_plain(value))
        self._sync(now, cause=name)
        return event.t

    # --- patched config --------------------------------------------------------------------

    def patched_config(self) -> dict[str, Any]:
        data: dict[str, Any] = self.config.model_dump(mode="json")
        for name, bus in data["buses"].items():
            if bus.get("kind") == "serial":
                bus["port"] = str(self.link(name))
                bus["parity"] = "N"  # a pty has no parity; the bridge keeps the 8E1 timing
        data["state_dir"] = str(self.state_dir)
        data["status_file"] = None
        return data

    def write_patched_config(self) -> Path:
        path = self.patched_config_path
        path.write_text(yaml.safe_dump(self.patched_config(), sort_keys=False))
        return path

    # --- wiring ----------------------------------------------------------------------------

    def _build(self) -> None:
        for cfg in self.config.wallbox_connectors():
            profile = cfg.wallbox.resolve()
            quirks = WallboxQuirks(self.quirks.standby_sleep_s, self.quirks.enforce_gap)
            sim = WallboxSim(profile, unit=cfg.wallbox.unit, clock=self.clock, quirks=quirks,
                             voltage_v=cfg.nominal_voltage_v, phases=cfg.phases,
                             on_write=self._writer(cfg.id))
            meter = MeterSim(_meter_model(cfg.meter), unit=cfg.meter.unit) if cfg.meter else None
            self.connectors[cfg.id] = WallboxConnectorSim(
                cfg, sim, RetrofitEv(), WallboxPilot(sim, self.config.profile), meter)

    async def _start_buses(self) -> None:
        for name, bus_cfg in self.config.buses.items():
            if not isinstance(bus_cfg, SerialBus):
                raise ValueError(f"bus {name!r}: the rig simulates serial buses only")
            devices = []
            for c in self.connectors.values():
                if c.config.wallbox.bus == name:
                    devices.append(c.sim.sim_device())
                if c.meter is not None and c.config.meter is not None and \
                        c.config.meter.bus == name:
                    devices.append(c.meter.device)
            wire = LineSettings(bus_cfg.baudrate, bus_cfg.parity, bus_cfg.stopbits)
            pty = LineSettings(bus_cfg.baudrate, "N", bus_cfg.stopbits)
            self._decoders[name] = FrameDecoder()
            bridge = PtyBridge(wire, link_a=str(self.link(name)), timing=self.options.line_timing,
                               tap=self._tap_for(name), mutate=self._mutate_for(name))
            self.bridges[name] = bridge.start()
            server = SimulatedBus(devices, port=bridge.path_b, line=pty)
            self.buses[name] = server
            for c in self.connectors.values():
                if c.meter is not None and c.config.meter is not None and \
                        c.config.meter.bus == name:
                    c.meter.attach(server)
            await server.start()
            for c in self.connectors.values():
                if c.config.wallbox.bus == name:
                    server.set_latency(c.config.wallbox.unit, self.options.device_latency_s)

    def _writer(self, cid: int) -> Callable[[str, int, float], None]:
        def on_write(register: str, value: int, now: float) -> None:
            c = self.connectors[cid]
            self.timeline.add("wallbox_write", now, connector=cid, register=register,
                              value=value, offered_a=c.sim.commanded_a())
        return on_write

    def _tap_for(self, bus: str) -> Callable[[str, float, bytes], None]:
        def tap(direction: str, t_done: float, data: bytes) -> None:
            for frame in self._decoders[bus].feed(direction, t_done, data):
                t = frame.pop("t")
                what = self._classify(bus, frame)
                if what is not None:
                    frame["what"] = what
                if what is not None or frame.get("exception") is not None or frame.get("bad"):
                    self.timeline.add("frame", t, bus=bus, **frame)
                else:
                    self.timeline.count_frame(bus, frame["dir"])
        return tap

    def _mutate_for(self, bus: str) -> Callable[[str, bytes], bytes | None]:
        def mutate(direction: str, data: bytes) -> bytes | None:
            with self._cut_lock:
                return None if bus in self._cut else data  # a cut cable carries nothing
        return mutate

    def _classify(self, bus: str, frame: dict[str, Any]) -> str | None:
        if frame.get("dir") != "a->b" or frame.get("bad"):
            return None
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

    # --- simulation tick -------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.options.tick_s)
            now = self.clock()
            self._sync(now)
            for c in self.connectors.values():
                if c.meter is not None:
                    await c.meter.set_measurements(
                        voltage_v=c.config.nominal_voltage_v, current_a=c.ev.draw_a,
                        power_w=c.config.nominal_voltage_v * c.ev.draw_a * c.config.phases,
                        energy_import_wh=c.energy_wh)

    def _sync(self, now: float, cause: str | None = None) -> None:
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


def make_rig(config: AgentConfig, run_dir: str | Path, *,
             options: RigOptions | None = None) -> Any:
    """The rig for a config: ``WallboxRig`` for a retrofit, ``hil.rig.Rig`` otherwise."""
    if config.wallbox_connectors():
        return WallboxRig(config, run_dir, options=options)
    from hil.rig import Rig

    return Rig(config, run_dir, options=options)
