"""Driver tests run over real pty pairs with line timing, pymodbus servers on the device side."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from pymodbus.simulator import SimDevice

from drivers.bus import BusScheduler
from hil.modbus_server import SimulatedBus
from hil.ptybridge import LineSettings, Mutate, PtyBridge


@dataclass
class Rig:
    bridge: PtyBridge
    sim: SimulatedBus
    bus: BusScheduler


@contextlib.asynccontextmanager
async def rig(
    devices: list[SimDevice],
    line: LineSettings | None = None,
    *,
    mutate: Mutate | None = None,
    link_a: Path | None = None,
    before_start: Callable[[SimulatedBus], None] | None = None,
    **bus_kwargs: object,
) -> AsyncIterator[Rig]:
    """A bridge, a simulated line with ``devices`` on side B and a BusScheduler on side A."""
    line = line or LineSettings(115200)
    bridge = PtyBridge(line, link_a=str(link_a) if link_a else None, timing=True, mutate=mutate)
    bridge.start()
    sim = SimulatedBus(devices, bridge.path_b, line)
    if before_start is not None:
        before_start(sim)
    await sim.start()
    kwargs: dict[str, object] = {"timeout_s": 0.2, "device_latency_s": 0.01}
    kwargs.update(bus_kwargs)
    bus = BusScheduler(
        "test", bridge.path_a, baud=line.baud, parity=line.parity, stopbits=line.stopbits,
        **kwargs,  # type: ignore[arg-type]
    )
    try:
        await bus.start()
        yield Rig(bridge, sim, bus)
    finally:
        await bus.stop()
        await sim.stop()
        bridge.close()
