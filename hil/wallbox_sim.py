"""Simulated wallbox: the device side of every ``WallboxProfile``, with its quirks switchable.

It serves exactly the registers of the profile (``drivers.wallbox.profiles``) from its own
model: the vehicle's letter (the rig's EV plugs in, closes and opens S2), the current register
and the disable path the agent writes, the communication watchdog with its fail-safe current,
and the energy counter. What the wallbox would offer the vehicle is ``offered_a(now)``: the
commanded current while the agent talks to it, the fail-safe current once its watchdog expired.

Quirks (``WallboxQuirks``), each switchable:

- ``standby_sleep_s`` (Heidelberg): with standby allowed (register 258 != 4), the RS-485 side
  falls asleep this long after the vehicle left and answers nothing until a vehicle plugs in.
- ``enforce_gap`` (EVSE-WB-DIN): a request sooner than the profile's minimum gap after the last
  one is not answered.
- ``reset(now)``: the wallbox reboots with its defaults (a power cut on its side).
- ``state_override``: the state register reports this raw value (outside the table, an error).
Silence, late answers and exception answers are the ``SimulatedBus``'s per-unit injections.

Line timing (8E1 at 19200 for Heidelberg) is the pty bridge's job; see ``hil.simrig_wallbox`` for
why the pty itself is opened without parity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from drivers.registers import Function, Register
from drivers.wallbox.profiles import WallboxProfile

LETTER_CURRENT = frozenset({"C", "D"})
STANDBY_DISABLED = 4


@dataclass(slots=True)
class WallboxQuirks:
    standby_sleep_s: float | None = None
    enforce_gap: bool = True


@dataclass
class WallboxSim:
    """One wallbox of ``profile`` at ``unit``; ``clock`` is the rig's monotonic clock."""

    profile: WallboxProfile
    unit: int = 1
    clock: Callable[[], float] | None = None
    quirks: WallboxQuirks = field(default_factory=WallboxQuirks)
    vehicle: str = "A"
    state_override: int | None = None
    energy_wh: float = 0.0
    current_draw_a: float = 0.0
    voltage_v: float = 230.0
    phases: int = 1
    on_write: Callable[[str, int, float], None] | None = None
    memory: dict[str, int] = field(default_factory=dict)
    _last_comm: float | None = None
    _left_at: float | None = None
    _asleep: bool = False
    _blocks: dict[Function, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._regs = {r.name: r for r in self.profile.registers()}
        self._by_addr = {(r.function, r.address): r for r in self._regs.values()}
        self.reset_memory()
        for function in (Function.COIL, Function.HOLDING, Function.INPUT):
            regs = [r for r in self._regs.values() if r.function is function]
            if regs:
                first = min(r.address for r in regs)
                self._blocks[function] = (first, max(r.end for r in regs) - first)

    # --- the model -------------------------------------------------------------------------

    def reset_memory(self) -> None:
        self.memory = {name: 0 for name, r in self._regs.items()
                       if r.function in (Function.HOLDING, Function.COIL)}
        self.memory.update({k: v for k, v in self.profile.defaults.items() if k in self.memory})

    def reset(self, now: float) -> None:
        """Reboot: every holding register and coil back to its default, watchdog off."""
        self.reset_memory()
        self._last_comm = now
        self._asleep = False

    def _value(self, reg: Register | None) -> int:
        return 0 if reg is None else self.memory.get(reg.name, 0)

    def watchdog_s(self) -> float:
        wd = self.profile.watchdog
        return 0.0 if wd is None else self._value(wd) * wd.scale

    def failsafe_active(self, now: float) -> bool:
        """The agent went silent longer than the programmed watchdog timeout."""
        timeout = self.watchdog_s()
        return timeout > 0 and self._last_comm is not None and now - self._last_comm > timeout

    def commanded_a(self) -> float:
        """What the current register and the disable path allow right now."""
        p = self.profile
        amps = self._value(p.current) * p.current.scale
        dis = p.disable
        if dis.kind == "coil" and not self._value(dis.register):
            return 0.0
        if dis.kind == "register" and self._value(dis.register) != dis.on_value:
            return 0.0
        return amps if amps >= p.min_current_a else 0.0

    def offered_a(self, now: float) -> float:
        """The current the wallbox's own pilot offers the vehicle."""
        if self.failsafe_active(now):
            fs = self.profile.failsafe_current
            amps = 0.0 if fs is None else self._value(fs) * fs.scale
            return amps if amps >= self.profile.min_current_a else 0.0
        return self.commanded_a()

    def set_vehicle(self, now: float, letter: str) -> None:
        if letter == "A" and self.vehicle != "A":
            self._left_at = now
        elif letter != "A":
            self._left_at = None
            self._asleep = False  # a vehicle wakes it up
        self.vehicle = letter

    def state_value(self, now: float) -> int:
        """The decoded state value (table key) for the vehicle letter and the offer."""
        if self.state_override is not None:
            return self.state_override
        keys = sorted(k for k, v in self.profile.states.items() if v == self.vehicle)
        if not keys:
            return 0
        allowed = self.offered_a(now) > 0
        return keys[1] if allowed and len(keys) > 1 else keys[0]

    def state_word(self, now: float) -> int:
        value = self.state_value(now)
        return (value << 8) & 0xFFFF if self.profile.state_encoding == "ascii_high_byte" \
            else value & 0xFFFF

    def _input_values(self, now: float) -> dict[str, float]:
        amps = self.current_draw_a
        values: dict[str, float] = {"power": self.voltage_v * amps * self.phases}
        for i in (1, 2, 3):
            on = i <= self.phases
            values[f"current_l{i}"] = amps if on else 0.0
            values[f"voltage_l{i}"] = self.voltage_v if on else 0.0
        if self.profile.energy is not None:
            values[self.profile.energy.name] = self.energy_wh
        return values

    def _check_awake(self, now: float) -> None:
        sleep = self.quirks.standby_sleep_s
        standby = self.memory.get("standby")
        if sleep is not None and standby is not None and standby != STANDBY_DISABLED and \
                self._left_at is not None and now - self._left_at >= sleep:
            self._asleep = True
        if self._asleep:
            raise NoSuchIdException(f"wallbox {self.unit} in standby")

    # --- writes ----------------------------------------------------------------------------

    def write(self, now: float, function: Function, address: int,
              values: Sequence[int]) -> ExcCodes | None:
        p = self.profile
        for offset, raw in enumerate(values):
            reg = self._by_addr.get((function, address + offset))
            if reg is None:
                return ExcCodes.ILLEGAL_ADDRESS
            if reg.name in (p.current.name, getattr(p.failsafe_current, "name", None)):
                zero_ok = p.disable.kind == "zero_current" or reg is p.failsafe_current
                lo = round(p.min_current_a / reg.scale)
                hi = round(p.max_current_a / reg.scale)
                if not (lo <= raw <= hi or (raw == 0 and zero_ok)):
                    return ExcCodes.ILLEGAL_VALUE
        for offset, raw in enumerate(values):
            reg = self._by_addr[(function, address + offset)]
            self.memory[reg.name] = int(raw)
            if self.on_write is not None:
                self.on_write(reg.name, int(raw), now)
        return None

    # --- pymodbus glue ---------------------------------------------------------------------

    def sim_device(self) -> SimDevice:
        return SimDevice(id=self.unit, simdata=self.simdata(), action=self.action)

    def simdata(self) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
        def block(function: Function, bits: bool) -> list[SimData]:
            if function not in self._blocks:
                kind = DataType.BITS if bits else DataType.REGISTERS
                return [SimData(0xFF00, count=16 if bits else 1, values=False if bits else 0,
                                datatype=kind, readonly=True)]
            start, count = self._blocks[function]
            if bits:
                return [SimData(start, count=max(16, count), values=False,
                                datatype=DataType.BITS)]
            return [SimData(start, values=[0] * count, datatype=DataType.REGISTERS)]

        return (block(Function.COIL, True),
                [SimData(0xFF00, count=16, values=False, datatype=DataType.BITS, readonly=True)],
                block(Function.HOLDING, False), block(Function.INPUT, False))

    def words(self, function: Function, now: float) -> list[int]:
        """The whole block of one table, as the wallbox would answer it now."""
        start, count = self._blocks[function]
        out = [0] * count
        inputs = self._input_values(now)
        for reg in self._regs.values():
            if reg.function is not function:
                continue
            if reg is self.profile.state:
                raw = [self.state_word(now)]
            elif reg.name in self.memory:
                raw = [self.memory[reg.name]]
            else:
                raw = reg.encode(inputs.get(reg.name, 0.0))
            out[reg.address - start: reg.end - start] = raw
        return out

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        now = self._now()
        if function_code not in (5, 6, 15, 16) or set_values is not None:
            self._check_awake(now)
            gap = self.profile.min_gap_s
            if self.quirks.enforce_gap and gap and self._last_comm is not None and \
                    now - self._last_comm < gap * 0.9:
                self._last_comm = now
                raise NoSuchIdException(f"wallbox {self.unit}: request inside its gap")
            self._last_comm = now  # any request feeds the communication watchdog
        function = {1: Function.COIL, 3: Function.HOLDING, 4: Function.INPUT, 5: Function.COIL,
                    15: Function.COIL, 6: Function.HOLDING, 16: Function.HOLDING
                    }.get(function_code)
        if function is None or function not in self._blocks:
            return ExcCodes.ILLEGAL_ADDRESS
        if function_code in (5, 6, 15, 16):
            if set_values is None:
                return None
            result = self.write(now, function, address, [int(v) for v in set_values])
            if result is not None:
                return result
        words = self.words(function, now)
        base = self._blocks[function][0] - start_address
        if function is Function.COIL:
            bits = [bool(w) for w in words] + [False] * (16 - len(words) % 16 or 0)
            packed = [int(x) for x in SimUtils.bitsToRegisters(bits[: max(16, len(bits))])]
            registers[base // 16: base // 16 + len(packed)] = packed
        else:
            registers[base: base + len(words)] = words
        return None

    def _now(self) -> float:
        if self.clock is None:
            raise RuntimeError("WallboxSim.clock is not set")
        return self.clock()
