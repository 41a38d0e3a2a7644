"""The simulated hardware of a HIL rig, as it runs inside the rig process (``hil.rigd``).

Per serial bus one ``PtyBridge`` (line timing, stable link ``<run_dir>/tty-<bus>``, a tap that
records every frame completing on the virtual wire) and one ``SimulatedBus``; per connector the
devices of its kind (``hil.simrig_boards`` for our pilot and relay boards, ``hil.simrig_wallbox``
for a retrofitted wallbox). A tick (10 ms) advances the vehicles and records every change on the
``Timeline`` with ``time.monotonic`` (the rig clock, the same clock in every process).

Faults of the wire, common to both kinds: ``unit_silent`` / ``slow_answers`` ({bus, unit,
latency_ms}), ``crc_errors`` ({bus, count, direction}), ``port_vanish`` (bus), ``bus_cut``
(nothing crosses the cable) and ``pilot_garbage`` (pilot-sample answers with random register
values and a valid CRC, {seed}).

Tests never hold this object: they drive ``hil.rig.Rig``, which talks to it across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymodbus.framer import FramerRTU

from agent.config import AgentConfig, MeterConfig, SerialBus
from drivers.meters.maps import MODELS, MeterModel, model_from_config
from hil.ev import EvParams
from hil.frames import FrameDecoder
from hil.modbus_server import SimulatedBus
from hil.ptybridge import LineSettings, PtyBridge
from hil.report import Timeline

STALL_REPORT_S = 0.015
PILOT_SAMPLE_ANSWER_LEN = 21  # unit, fc 4, byte count, 8 registers, CRC


@dataclass(slots=True)
class RigOptions:
    """Knobs of the simulated hardware (scenario ``rig:`` section)."""

    ev: EvParams = field(default_factory=EvParams)
    relay_close_delay_s: float = 0.030
    relay_open_delay_s: float = 0.020
    device_latency_s: float = 0.001
    tick_s: float = 0.010
    line_timing: bool = True


def patched_config(config: AgentConfig, run_dir: Path) -> dict[str, Any]:
    """The config the agent runs on the bench: ports replaced by the rig's links, state in the
    run directory. A pty has no parity, so the link says ``N``; the bridge keeps the configured
    line's timing (a wallbox's 8E1 is 11 bits a character on the virtual wire)."""
    data: dict[str, Any] = config.model_dump(mode="json")
    for name, bus in data["buses"].items():
        if bus.get("kind") == "serial":
            bus["port"] = str(run_dir / f"tty-{name}")
            bus["parity"] = "N"
    data["state_dir"] = str(run_dir / "state")
    data["status_file"] = None
    return data


class SimRig:
    """The life cycle, wire and timeline shared by both kinds of simulated hardware."""

    kind = "base"

    def __init__(self, config: AgentConfig, run_dir: Path, options: RigOptions) -> None:
        self.config = config
        self.run_dir = run_dir
        self.options = options
        self.clock: Callable[[], float] = time.monotonic
        self.timeline = Timeline(self.clock())
        self.bridges: dict[str, PtyBridge] = {}
        self.buses: dict[str, SimulatedBus] = {}
        self._decoders: dict[str, FrameDecoder] = {}
        self._wire_lock = threading.Lock()  # the bridge threads read what the loop sets
        self._corrupt: dict[tuple[str, str], int] = {}
        self._cut: set[str] = set()
        self._garbage: dict[str, random.Random] = {}
        self._tick_task: asyncio.Task[None] | None = None

    # --- hooks of a kind ---------------------------------------------------------------------

    def build(self) -> None:
        raise NotImplementedError

    def devices_on(self, bus: str) -> list[Any]:
        raise NotImplementedError

    def units_on(self, bus: str) -> list[int]:
        raise NotImplementedError

    def attach(self, bus: str, server: SimulatedBus) -> None:
        """Give devices that push values (meters) their server."""

    def classify(self, bus: str, frame: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def sync(self, now: float, cause: str | None = None) -> None:
        raise NotImplementedError

    async def on_tick(self, now: float) -> None:
        """Per-tick work after ``sync`` (meter registers)."""

    def ev_action(self, name: str, connector: int | None = None, **kw: Any) -> float:
        raise NotImplementedError

    def inject_device(self, name: str, value: Any, on: bool, connector: int | None) -> bool:
        """A fault of this kind's devices; False when the name is not one of them."""
        raise NotImplementedError

    def probe(self, connector: int | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def connector_ids(self) -> list[int]:
        raise NotImplementedError

    def control_bus(self, connector: int | None) -> str:
        """The bus a wire fault hits when it names none: the connector's pilot or wallbox."""
        raise NotImplementedError

    def pilot_unit(self) -> tuple[str, int] | None:
        """(bus, unit) of the first pilot board, for ``pilot_garbage``."""
        return None

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        (self.run_dir / "state").mkdir(parents=True, exist_ok=True)
        self.timeline = Timeline(self.clock())
        try:
            self.build()
            await self._start_buses()
            self.sync(self.clock())
            self._tick_task = asyncio.get_running_loop().create_task(self._tick())
        except BaseException:
            await self.stop()
            raise

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

    async def _start_buses(self) -> None:
        for name, bus_cfg in self.config.buses.items():
            if not isinstance(bus_cfg, SerialBus):
                raise ValueError(f"bus {name!r}: the rig simulates serial buses only")
            wire = LineSettings(bus_cfg.baudrate, bus_cfg.parity, bus_cfg.stopbits)
            pty = LineSettings(bus_cfg.baudrate, "N", bus_cfg.stopbits)
            self._decoders[name] = FrameDecoder()
            bridge = PtyBridge(wire, link_a=str(self.run_dir / f"tty-{name}"),
                               timing=self.options.line_timing,
                               tap=self._tap_for(name), mutate=self._mutate_for(name))
            self.bridges[name] = bridge.start()
            server = SimulatedBus(self.devices_on(name), port=bridge.path_b, line=pty)
            self.buses[name] = server
            self.attach(name, server)
            await server.start()
            for unit in self.units_on(name):
                server.set_latency(unit, self.options.device_latency_s)

    async def _tick(self) -> None:
        last = self.clock()
        while True:
            await asyncio.sleep(self.options.tick_s)
            now = self.clock()
            if now - last > self.options.tick_s + STALL_REPORT_S:  # the rig's loop was late
                self.timeline.add("rig_stall", now, late_ms=round((now - last) * 1000, 1))
            last = now
            self.sync(now)
            await self.on_tick(now)

    # --- faults ------------------------------------------------------------------------------

    def inject(self, name: str, value: Any = True, connector: int | None = None) -> float:
        """Inject (truthy ``value``) or clear (``False``/``None``, or a spec with ``"on":
        false``) a fault; see the module docs."""
        now = self.clock()
        on = value is not False and value is not None and \
            not (isinstance(value, dict) and value.get("on") is False)
        if not self._inject_wire(name, value, on, connector) and \
                not self.inject_device(name, value, on, connector):
            raise ValueError(f"unknown fault {name!r} on a {self.kind} rig")
        event = self.timeline.add("inject", now, fault=name, value=_plain(value))
        self.sync(now, cause=name)
        return event.t

    def _inject_wire(self, name: str, value: Any, on: bool, connector: int | None) -> bool:
        spec = value if isinstance(value, dict) else {}
        bus = str(spec.get("bus", value if isinstance(value, str) else
                           self.control_bus(connector)))
        if name in ("slow_answers", "unit_silent"):
            units = [int(spec["unit"])] if "unit" in spec else self.units_on(bus)
            for unit in units:
                if name == "unit_silent":
                    self.buses[bus].set_silent(unit, on)
                else:
                    latency = float(spec.get("latency_ms", 200.0)) / 1000.0 if on else 0.0
                    self.buses[bus].set_latency(unit, latency or self.options.device_latency_s)
        elif name == "crc_errors":
            with self._wire_lock:
                self._corrupt[(bus, str(spec.get("direction", "b->a")))] = \
                    int(spec.get("count", 3)) if on else 0
        elif name == "port_vanish":
            self.bridges[bus].vanish() if on else self.bridges[bus].restore()
        elif name == "bus_cut":
            with self._wire_lock:
                (self._cut.add if on else self._cut.discard)(bus)
        elif name == "pilot_garbage":
            where = self.pilot_unit()
            if where is None:
                raise ValueError("pilot_garbage: this rig has no pilot board")
            with self._wire_lock:
                if on:
                    self._garbage[where[0]] = random.Random(int(spec.get("seed", 1)))
                else:
                    self._garbage.pop(where[0], None)
        else:
            return False
        return True

    # --- the wire ----------------------------------------------------------------------------

    def _tap_for(self, bus: str) -> Callable[[str, float, bytes], None]:
        def tap(direction: str, t_done: float, data: bytes) -> None:
            for frame in self._decoders[bus].feed(direction, t_done, data):
                t = frame.pop("t")
                what = self.classify(bus, frame) if frame.get("dir") == "a->b" and \
                    not frame.get("bad") else None
                if what is not None:
                    frame["what"] = what
                if what is not None or frame.get("exception") is not None or frame.get("bad"):
                    self.timeline.add("frame", t, bus=bus, **frame)
                else:
                    self.timeline.count_frame(bus, frame["dir"])
        return tap

    def _mutate_for(self, bus: str) -> Callable[[str, bytes], bytes | None]:
        def mutate(direction: str, data: bytes) -> bytes | None:
            with self._wire_lock:
                if bus in self._cut:
                    return None  # a cut cable carries nothing
                rng = self._garbage.get(bus)
                left = self._corrupt.get((bus, direction), 0)
                if left > 0 and data:
                    self._corrupt[(bus, direction)] = left - 1
                    return data[:-1] + bytes([data[-1] ^ 0xFF])  # damage the CRC's last byte
                if rng is not None and direction == "b->a":
                    return self._garbled(rng, data)
            return data
        return mutate

    def _garbled(self, rng: random.Random, data: bytes) -> bytes:
        where = self.pilot_unit()
        if where is None or len(data) != PILOT_SAMPLE_ANSWER_LEN or data[0] != where[1] \
                or data[1] != 4:
            return data
        body = data[:3] + bytes(rng.randrange(256) for _ in range(16))
        return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


def meter_model(cfg: MeterConfig) -> MeterModel:
    if cfg.model == "custom":
        return model_from_config("custom", [r.model_dump() for r in cfg.registers or []])
    try:
        return MODELS[cfg.model]
    except KeyError as exc:
        raise ValueError(f"meter model {cfg.model!r}: the rig knows {sorted(MODELS)}") from exc


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | dict | list) or value is None \
        else str(value)
