"""One driver for every wallbox profile, on the bus scheduler like the boards and meters.

The wallbox is one unit on a ``BusScheduler``; this driver keeps the profile's minimum gap
between its own transactions (EVSE-WB-DIN: 200 ms), writes the current with the profile's
function code, pauses through the profile's disable path (never an illegal current), and
remembers every value it programmed so ``verify`` can tell when the wallbox has reset and come
back with its defaults. Pausing is the wallbox's equivalent of opening the contactor: it goes
out at ``SAFETY_WRITE`` priority, ahead of anything queued on the bus. It runs only the
transactions ``drivers.wallbox.wire`` declares for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from drivers.bus import BusScheduler
from drivers.interfaces import MeterReading
from drivers.registers import Register, decode_block
from drivers.wallbox.profiles import WallboxCommand, WallboxProfile
from drivers.wallbox.wire import WallboxWire, wallbox_wire, write_function
from drivers.wire import Priority, Transaction


class WallboxDriver:
    """A wallbox of ``profile`` at ``unit`` on ``bus``."""

    def __init__(
        self,
        bus: BusScheduler,
        unit: int,
        profile: WallboxProfile,
        *,
        phases: int = 1,
        watchdog_s: float | None = None,
        failsafe_a: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wire: WallboxWire | None = None,
    ) -> None:
        self.bus = bus
        self.unit = unit
        self.profile = profile
        self.phases = phases
        self.watchdog_s = watchdog_s if profile.watchdog is not None else None
        self.failsafe_a = failsafe_a if profile.failsafe_current is not None else None
        self._clock = clock
        self._lock = asyncio.Lock()
        self._last_done = -1e9
        self.programmed: dict[str, int] = {}  # register name -> raw value we wrote
        self.command: WallboxCommand | None = None
        self.wire = wire or wallbox_wire(profile, unit, watchdog=self.watchdog_s is not None,
                                         failsafe=self.failsafe_a is not None,
                                         energy_s=1.0 if profile.energy is not None else None)

    # --- start-up and re-programming ---------------------------------------------------------

    async def program(self) -> None:
        """Setup writes (standby off ...), watchdog and fail-safe current; after a reset too."""
        p = self.profile
        for write in p.setup:
            await self._write(write.register, write.value)
        if p.failsafe_current is not None and self.failsafe_a is not None:
            await self._write(p.failsafe_current, self.failsafe_raw())
        if p.watchdog is not None and self.watchdog_s is not None:
            await self._write(p.watchdog, round(self.watchdog_s / p.watchdog.scale))
        if self.command is not None:
            await self.apply(self.command, force=True)

    def failsafe_raw(self) -> int:
        """The fail-safe current in register units: rounded down; below the minimum, 0."""
        p = self.profile
        amps = self.failsafe_a or 0.0
        if amps < p.min_current_a:
            return 0
        step = p.current.scale
        return int(min(amps, p.max_current_a) / step + 1e-9)

    # --- the control path ------------------------------------------------------------------

    async def apply(self, command: WallboxCommand, *, force: bool = False) -> None:
        """Write the current and the disable path; only what changed unless ``force``."""
        p = self.profile
        old = None if force else self.command
        dis = p.disable
        if old == command:
            return
        if not command.enabled:
            if dis.kind == "zero_current":
                await self._write_current(0, Priority.SAFETY_WRITE)
            elif dis.register is not None:
                await self._write(dis.register, dis.off_value if dis.kind == "register" else 0,
                                  Priority.SAFETY_WRITE)
            self.command = command
            return
        if old is None or old.raw != command.raw or (
                not old.enabled and dis.kind == "zero_current"):
            lower = old is not None and old.enabled and command.raw < old.raw
            await self._write_current(command.raw, Priority.SAFETY_WRITE if lower
                                      else Priority.CONTROL)
        if dis.kind != "zero_current" and dis.register is not None and (
                old is None or not old.enabled):
            await self._write(dis.register, dis.on_value if dis.kind == "register" else 1)
        self.command = command

    async def _write_current(self, raw: int, priority: Priority) -> None:
        await self._write(self.profile.current, raw, priority)

    # --- reads -----------------------------------------------------------------------------

    async def read_state(self) -> int:
        """The vehicle state as the profile's table keys it (Phoenix: the ASCII code)."""
        raw = await self._read(self.wire.state)
        return self.profile.decode_state(raw[0])

    async def read_meter(self) -> MeterReading | None:
        """Currents, voltages, power and energy from the wallbox's own registers, if it has
        an energy register (otherwise a meter on the bus provides them)."""
        p = self.profile
        if p.energy is None or not self.wire.energy:
            return None
        values: dict[str, float] = {}
        for block, txn in self.wire.energy:
            values.update(decode_block(block, await self._read(txn)))
        phases = range(1, self.phases + 1)
        return MeterReading(
            voltage_v=tuple(values.get(f"voltage_l{i}", 0.0) for i in phases),
            current_a=tuple(values.get(f"current_l{i}", 0.0) for i in phases),
            power_w=values.get("power", 0.0),
            energy_import_wh=values[p.energy.name],
        )

    async def verify(self) -> list[str]:
        """Names of programmed registers that no longer hold what we wrote (a reset)."""
        changed: list[str] = []
        for block, txn in self.wire.verify:
            mine = [reg for reg in block.registers if reg.name in self.programmed]
            if not mine:
                continue
            raw = await self._read(txn)
            for reg in mine:
                now = int(raw[reg.address - block.address])
                if now != self.programmed[reg.name]:
                    changed.append(reg.name)
        return changed

    # --- transactions, with the profile's minimum gap ----------------------------------------

    async def _read(self, txn: Transaction) -> list[int]:
        async with self._lock:
            await self._gap()
            try:
                return await self.bus.run(txn)
            finally:
                self._last_done = self._clock()

    async def _write(self, reg: Register, raw: int,
                     priority: Priority = Priority.CONTROL) -> None:
        txn = self.wire.write_for(write_function(self.profile, reg), reg.address, priority)
        if not 0 <= raw <= 0xFFFF:
            raise ValueError(f"{reg.name}: {raw} out of 0..65535")
        async with self._lock:
            await self._gap()
            try:
                await self.bus.run(txn, (int(bool(raw)) if txn.function == 5 else raw,))
                self.programmed[reg.name] = int(raw)
            finally:
                self._last_done = self._clock()

    async def _gap(self) -> None:
        wait = self._last_done + self.profile.min_gap_s - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)

