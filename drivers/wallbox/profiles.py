"""Wallbox profiles as data (../shared/specs/retrofit.md): registers, value tables, quirks.

A retrofitted wallbox runs its own control pilot; the agent only sets its current limit, reads
its vehicle state (and energy, where it has a register for it) and programs its fail-safe. One
``WallboxProfile`` describes all of that for a family, the way ``drivers.meters.maps`` describes
a meter: the driver (``drivers.wallbox.driver``) and the simulator (``hil.wallbox_sim``) read
the same data, and ``profile: custom`` builds one from the config (``profile_from_config``).

Addresses are 0-based protocol addresses. Quirks that are data:

- Heidelberg Energy Control: 0.1 A units, 6-16 A, 0 = no charging; standby must be disabled
  (register 258 = 4) or the RS-485 side sleeps; a communication watchdog (257, ms) and a
  fail-safe current (262) it falls back to when the watchdog expires.
- Phoenix Contact EV-CC-AC1-M3: the vehicle status is an ASCII letter in the register's high
  byte; charging is disabled through a coil, never by writing an illegal current.
- EVSE-WB-DIN: slow, at least 200 ms between transactions to the same unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from drivers.registers import Block, DataType, Function, Register, RegisterMap

StateEncoding = Literal["value", "ascii_high_byte"]
DisableKind = Literal["zero_current", "coil", "register"]
# What a state value means: the IEC/GB letter, or "error" (the wallbox reports a fault).
STATE_MEANINGS = ("A", "B", "C", "D", "E", "F", "error")


@dataclass(frozen=True, slots=True)
class WallboxCommand:
    """What the current register (and the disable path) should say: ``raw`` in the register's
    units, ``enabled`` False = paused through the disable path (``raw`` is then 0)."""

    raw: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class LineDefaults:
    """The wallbox's serial settings out of the box (the bus config names the real ones)."""

    baud: int
    parity: str = "N"
    stopbits: int = 1


@dataclass(frozen=True, slots=True)
class DisablePath:
    """How charging is paused: current register 0, an enable coil off, or a lock register."""

    kind: DisableKind
    register: Register | None = None  # the coil or register of "coil"/"register"
    off_value: int = 0  # written to pause ("register"); "coil": the coil off
    on_value: int = 1  # written to allow charging ("register"); "coil": the coil on


@dataclass(frozen=True, slots=True)
class SetupWrite:
    """A holding register written at start-up and after every wallbox reset."""

    register: Register
    value: int
    why: str = ""


@dataclass(frozen=True, slots=True)
class WallboxProfile:
    """One wallbox family: everything the driver, the core and the simulator need."""

    name: str
    title: str
    line: LineDefaults
    state: Register
    state_encoding: StateEncoding
    states: Mapping[int, str]  # decoded state value -> one of STATE_MEANINGS
    current: Register  # holding; value = raw * scale in A
    min_current_a: float
    max_current_a: float
    disable: DisablePath
    write_function: Literal[6, 16] = 16
    watchdog: Register | None = None  # holding; value = raw * scale in seconds
    failsafe_current: Register | None = None  # holding; same scale as ``current``
    energy: Register | None = None  # value in Wh
    measurements: tuple[Register, ...] = ()  # current_l1..3 (A), voltage_l1..3 (V), power (W)
    setup: tuple[SetupWrite, ...] = ()
    min_gap_s: float = 0.0
    defaults: Mapping[str, int] = field(default_factory=dict)  # simulator: values after reset
    notes: str = ""

    def __post_init__(self) -> None:
        bad = {v: m for v, m in self.states.items() if m not in STATE_MEANINGS}
        if bad:
            raise ValueError(f"profile {self.name}: state meanings {bad} not in {STATE_MEANINGS}")
        if not 0 < self.min_current_a <= self.max_current_a:
            raise ValueError(f"profile {self.name}: current range "
                             f"{self.min_current_a}..{self.max_current_a} A")
        if self.current.function is not Function.HOLDING:
            raise ValueError(f"profile {self.name}: the current register must be a holding one")
        if self.disable.kind != "zero_current" and self.disable.register is None:
            raise ValueError(f"profile {self.name}: disable path {self.disable.kind} "
                             "needs its register")

    @property
    def current_step_a(self) -> float:
        """The finest current the wallbox can be given (A per raw unit)."""
        return self.current.scale

    def decode_state(self, raw: int) -> int:
        """The state register's word -> the key of ``states`` (an ASCII code for Phoenix)."""
        return (raw >> 8) & 0xFF if self.state_encoding == "ascii_high_byte" else raw

    def meter_blocks(self) -> list[Block]:
        """The reads of its own measurements and energy: contiguous runs only (a register
        between them may not exist on the real unit and would fail the whole read)."""
        if self.energy is None:
            return []
        return RegisterMap(self.name, (*self.measurements, self.energy)).blocks(
            max_words=32, max_gap=0)

    def registers(self) -> tuple[Register, ...]:
        """Every register the profile touches (the simulator serves exactly these)."""
        regs = [self.state, self.current, *self.measurements]
        regs += [r for r in (self.watchdog, self.failsafe_current, self.energy,
                             self.disable.register) if r is not None]
        regs += [w.register for w in self.setup]
        seen: dict[tuple[Function, int], Register] = {}
        for reg in regs:
            seen.setdefault((reg.function, reg.address), reg)
        return tuple(seen.values())


_IR, _HR, _CO = Function.INPUT, Function.HOLDING, Function.COIL
_U16 = DataType.U16


def _letters(*letters: str) -> dict[int, str]:
    return {ord(letter): letter for letter in letters}


HEIDELBERG = WallboxProfile(
    name="heidelberg",
    title="Heidelberg Energy Control (Amperfied), register layout 2021-02-22",
    line=LineDefaults(19200, "E", 1),
    state=Register("charging_state", 5, _IR, _U16),
    state_encoding="value",
    states=MappingProxyType({2: "A", 3: "A", 4: "B", 5: "B", 6: "C", 7: "C", 8: "C",
                             9: "E", 10: "F", 11: "error"}),
    current=Register("max_current", 261, _HR, _U16, scale=0.1, unit="A", writable=True),
    min_current_a=6.0,
    max_current_a=16.0,
    disable=DisablePath("zero_current"),
    write_function=16,
    watchdog=Register("watchdog_timeout", 257, _HR, _U16, scale=0.001, unit="s",
                      writable=True),
    failsafe_current=Register("failsafe_current", 262, _HR, _U16, scale=0.1, unit="A",
                              writable=True),
    energy=Register("energy", 17, _IR, DataType.U32, unit="Wh"),
    measurements=(
        Register("current_l1", 6, _IR, _U16, scale=0.1, unit="A"),
        Register("current_l2", 7, _IR, _U16, scale=0.1, unit="A"),
        Register("current_l3", 8, _IR, _U16, scale=0.1, unit="A"),
        Register("voltage_l1", 10, _IR, _U16, unit="V"),
        Register("voltage_l2", 11, _IR, _U16, unit="V"),
        Register("voltage_l3", 12, _IR, _U16, unit="V"),
        Register("power", 14, _IR, _U16, unit="W"),
    ),
    setup=(SetupWrite(Register("standby", 258, _HR, _U16, writable=True), 4,
                      "standby disabled: in standby the RS-485 side sleeps"),
           SetupWrite(Register("remote_lock", 259, _HR, _U16, writable=True), 1,
                      "remote lock open (1 = unlocked): the agent pauses by current 0")),
    min_gap_s=0.0,
    # After a power cycle the wallbox comes back with these (standby allowed, no watchdog,
    # full current): exactly what the agent must notice and re-program.
    defaults=MappingProxyType({"watchdog_timeout": 0, "standby": 0, "remote_lock": 1,
                               "max_current": 160, "failsafe_current": 0}),
    notes="0.1 A units, 6-16 A (0 = no charging); standby disabled at start-up",
)

PHOENIX_EV_CC = WallboxProfile(
    name="phoenix-ev-cc",
    title="Phoenix Contact EV-CC-AC1-M3 (serial)",
    line=LineDefaults(9600, "N", 1),
    state=Register("vehicle_status", 24000, _IR, _U16),
    state_encoding="ascii_high_byte",
    states=MappingProxyType(_letters("A", "B", "C", "D", "E", "F")),
    current=Register("max_current", 22000, _HR, _U16, unit="A", writable=True),
    min_current_a=6.0,
    max_current_a=32.0,
    disable=DisablePath("coil", Register("charging_enabled", 20000, _CO, DataType.BIT,
                                         writable=True)),
    write_function=6,
    defaults=MappingProxyType({"max_current": 16, "charging_enabled": 1}),
    notes="status: ASCII letter in the high byte; paused by the enable coil; no watchdog",
)

EVSE_WB_DIN = WallboxProfile(
    name="evse-wb-din",
    title="EVSE-WB-DIN (SimpleEVSE DIN-rail board)",
    line=LineDefaults(9600, "N", 1),
    state=Register("vehicle_state", 1002, _HR, _U16),
    state_encoding="value",
    states=MappingProxyType({1: "A", 2: "B", 3: "C", 4: "D", 5: "E"}),
    current=Register("configured_current", 1000, _HR, _U16, unit="A", writable=True),
    min_current_a=6.0,
    max_current_a=32.0,
    disable=DisablePath("zero_current"),
    write_function=16,
    min_gap_s=0.2,
    defaults=MappingProxyType({"configured_current": 16}),
    notes="slow: at least 200 ms between transactions; no watchdog, no energy register",
)

PROFILES: Mapping[str, WallboxProfile] = MappingProxyType(
    {p.name: p for p in (HEIDELBERG, PHOENIX_EV_CC, EVSE_WB_DIN)})
