"""Simulated pilot board: serves ``PILOT_BOARD_MAP`` from the device side (hardware.md).

The board generates the CP signal and measures CP and CC; it knows volts, ohms and duty and
does not classify states. The model is pure (time is an argument); ``simdata()`` and
``action`` plug it into a pymodbus ``SimDevice`` so every FC 04 read returns a sample computed
at the moment of the read, and illegal writes are refused with exception 03.

Board behaviour beyond the register table (documented choices of the simulator):
- the watchdog is armed by the first ``heartbeat`` (or ``watchdog_ms``) write, so a board that
  powers up before its controller does not start in FAILSAFE;
- FAILSAFE forces steady +12 V (``duty_actual`` 1000) until the next heartbeat; the bit stays
  latched until ``fault_reset``, like every other status bit;
- ``sample_seq`` advances every ``sample_period_s`` (10 ms) unless the board is frozen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.board_maps import (
    CC_OPEN_OHM,
    DUTY_STEADY_POSITIVE,
    PILOT_BOARD_MAP,
    PILOT_SAMPLE_ADDRESS,
    PILOT_SAMPLE_COUNT,
    PilotStatus,
    duty_cmd_is_valid,
)
from drivers.registers import Function
from hil.ev import OPEN_LINE, PilotLoad, cp_plateaus_mv

FW_VERSION = 0x0100
OVERTEMP_C = 85.0
# Where each value sits comes from the driver's map (drivers.board_maps), not from here.
_HOLDING = tuple(r for r in PILOT_BOARD_MAP if r.function is Function.HOLDING)
HOLDING_BASE = min(r.address for r in _HOLDING)
HOLDING_COUNT = max(r.end for r in _HOLDING) - HOLDING_BASE
_HOLDING_NAMES = {r.address: r.name for r in _HOLDING}
_SAMPLE_AT = {r.name: r.address - PILOT_SAMPLE_ADDRESS
              for r in PILOT_BOARD_MAP if r.function is Function.INPUT}
_TEMP_SCALE = PILOT_BOARD_MAP["temperature"].scale
ADDR_DUTY = PILOT_BOARD_MAP["duty_cmd"].address

NO_STATUS = PilotStatus(0)

WriteListener = Callable[[str, int, float], None]


def _u16(value: int) -> int:
    return value & 0xFFFF


@dataclass(slots=True)
class PilotBoardSim:
    """Pilot board state; ``line`` (the CP load) and ``cc_ohm`` are set by the rig from the EV."""

    unit: int = 1
    sample_period_s: float = 0.010
    overtemp_c: float = OVERTEMP_C
    temperature_c: float = 25.0
    line: PilotLoad = OPEN_LINE
    cc_ohm: int = CC_OPEN_OHM
    duty_cmd: int = DUTY_STEADY_POSITIVE
    watchdog_ms: int = 3000
    causes: PilotStatus = NO_STATUS  # conditions present now (RCD, PE, e-stop, self-test)
    latched: PilotStatus = NO_STATUS
    frozen: bool = False
    on_write: WriteListener | None = None  # (register name, value, now) after an accepted write
    clock: Callable[[], float] | None = None  # time source of the Modbus hooks
    _t0: float | None = None
    _frozen_seq: int = 0
    _last_heartbeat: float | None = None
    _last_sample: list[int] = field(default_factory=list)

    # --- physics ---------------------------------------------------------------------------

    def failsafe_active(self, now: float) -> bool:
        if self.watchdog_ms <= 0 or self._last_heartbeat is None:
            return False
        return now - self._last_heartbeat > self.watchdog_ms / 1000.0

    def duty_actual(self, now: float) -> int:
        return DUTY_STEADY_POSITIVE if self.failsafe_active(now) else self.duty_cmd

    def pwm_on(self, now: float) -> bool:
        return 0 < self.duty_actual(now) < DUTY_STEADY_POSITIVE

    def active_causes(self, now: float) -> PilotStatus:
        causes = self.causes
        if self.temperature_c > self.overtemp_c:
            causes |= PilotStatus.OVERTEMP
        if self.failsafe_active(now):
            causes |= PilotStatus.FAILSAFE
        return causes

    def status(self, now: float) -> PilotStatus:
        self.latched |= self.active_causes(now)
        return self.latched

    def set_cause(self, bit: PilotStatus, present: bool) -> None:
        self.causes = (self.causes | bit) if present else (self.causes & ~bit)

    def sample_seq(self, now: float) -> int:
        if self._t0 is None:
            self._t0 = now
        if self.frozen:
            return self._frozen_seq
        self._frozen_seq = int((now - self._t0) / self.sample_period_s) & 0xFFFF
        return self._frozen_seq

    def cp_mv(self, now: float) -> tuple[int, int]:
        return cp_plateaus_mv(self.line, self.duty_actual(now))

    def sample(self, now: float) -> list[int]:
        """The eight input registers 0x0000-0x0007 as raw u16 words."""
        if self.frozen and self._last_sample:
            return list(self._last_sample)
        high, low = self.cp_mv(now)
        words = [0] * PILOT_SAMPLE_COUNT
        for name, raw in (("cp_high_mv", high), ("cp_low_mv", low),
                          ("duty_actual", self.duty_actual(now)), ("cc_ohm", self.cc_ohm),
                          ("status", int(self.status(now))),
                          ("sample_seq", self.sample_seq(now)),
                          ("temperature", round(self.temperature_c / _TEMP_SCALE)),
                          ("fw_version", FW_VERSION)):
            words[_SAMPLE_AT[name]] = _u16(raw)
        self._last_sample = words
        return list(words)

    def holding(self) -> list[int]:
        words = [0] * HOLDING_COUNT  # heartbeat and fault_reset read back 0
        words[PILOT_BOARD_MAP["duty_cmd"].address - HOLDING_BASE] = self.duty_cmd
        words[PILOT_BOARD_MAP["watchdog_ms"].address - HOLDING_BASE] = self.watchdog_ms
        return words

    # --- writes ----------------------------------------------------------------------------

    def check_write(self, address: int, values: Sequence[int]) -> ExcCodes | None:
        """Exception to answer a holding write with, or None to accept it."""
        for offset, value in enumerate(values):
            if address + offset == ADDR_DUTY and not duty_cmd_is_valid(int(value)):
                return ExcCodes.ILLEGAL_VALUE
        return None

    def write(self, now: float, address: int, values: Sequence[int]) -> ExcCodes | None:
        """Apply an FC 06/16 write (after ``check_write``); refused writes change nothing."""
        if (exc := self.check_write(address, values)) is not None:
            return exc
        for offset, raw in enumerate(values):
            value = int(raw)
            name = _HOLDING_NAMES.get(address + offset)
            if name is None:
                continue
            if name == "duty_cmd":
                self.duty_cmd = value
            elif name == "watchdog_ms":
                self.watchdog_ms = value
                self._last_heartbeat = now
            elif name == "heartbeat":
                self._last_heartbeat = now
            elif name == "fault_reset" and value == 1:
                self.latched = self.active_causes(now)
            if self.on_write is not None:
                self.on_write(name, value, now)
        return None

    # --- pymodbus glue ---------------------------------------------------------------------

    def sim_device(self) -> SimDevice:
        """The pilot board as a pymodbus device for ``hil.modbus_server.SimulatedBus``."""
        return SimDevice(id=self.unit, simdata=self.simdata(), action=self.action)

    def simdata(self) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
        """(coils, discrete inputs, holding, input) blocks of a 4-block ``SimDevice``.

        The board has no bits; a read-only placeholder far from 0 keeps pymodbus happy and any
        bit access at the low addresses answers exception 02.
        """
        placeholder = [SimData(0xFF00, count=16, values=False, datatype=DataType.BITS,
                               readonly=True)]
        return (
            placeholder,
            [SimData(0xFF00, count=16, values=False, datatype=DataType.BITS, readonly=True)],
            [SimData(HOLDING_BASE, values=self.holding(), datatype=DataType.REGISTERS)],
            [SimData(PILOT_SAMPLE_ADDRESS, values=[0] * PILOT_SAMPLE_COUNT,
                     datatype=DataType.REGISTERS)],
        )

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """``SimDevice.action``: fresh sample on reads, validated side effects on writes."""
        now = self._now()
        if function_code == 4:
            sample = self.sample(now)
            base = PILOT_SAMPLE_ADDRESS - start_address
            registers[base : base + PILOT_SAMPLE_COUNT] = sample
            return None
        if function_code in (6, 16) and set_values is not None:
            result = self.write(now, address, [int(v) for v in set_values])
            base = HOLDING_BASE - start_address
            if result is None:
                registers[base : base + HOLDING_COUNT] = self.holding()
            return result
        return None

    def _now(self) -> float:
        if self.clock is None:
            raise RuntimeError("PilotBoardSim.clock is not set")
        return self.clock()
