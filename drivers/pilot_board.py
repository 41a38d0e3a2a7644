"""Driver of the control-pilot board (``board_maps.PILOT_BOARD_MAP``, hardware.md).

The safety poll is one FC 04 read of the input block 0x0000-0x0007 at ``PILOT_POLL``
priority; commands are FC 06 writes at ``CONTROL``. ``pilot_board_wire`` declares them all
(``drivers.wire``). A duty the board would refuse is refused here first (``ValueError``: a bug
in the caller, not a device fault).
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.board_maps import (
    PILOT_BOARD_MAP,
    PILOT_SAMPLE_ADDRESS,
    PILOT_SAMPLE_COUNT,
    duty_cmd_is_valid,
)
from drivers.bus import BusScheduler
from drivers.interfaces import PilotBoardSample
from drivers.registers import Block, DataType, Function
from drivers.wire import Priority, Transaction

__all__ = ["SAMPLE_BLOCK", "PilotBoardDriver", "PilotBoardSample", "PilotBoardWire",
           "decode_sample", "pilot_board_wire"]

DEFAULT_POLL_S = 0.010
DEFAULT_HEARTBEAT_S = 1.0

SAMPLE_BLOCK = Block(  # what decode_sample decodes (tests compare it with decode_block)
    Function.INPUT,
    PILOT_SAMPLE_ADDRESS,
    PILOT_SAMPLE_COUNT,
    tuple(r for r in PILOT_BOARD_MAP.registers if r.function is Function.INPUT),
)


def _word(name: str, dtype: DataType) -> int:
    """Offset of a one-word value in the sample block; the map must say what this driver
    decodes (a map change that this fast path does not follow fails at import, not silently)."""
    reg = PILOT_BOARD_MAP[name]
    if reg.dtype is not dtype or reg.function is not Function.INPUT:
        raise ValueError(f"pilot map: {name} is {reg.dtype.value}, decoded as {dtype.value}")
    offset = reg.address - PILOT_SAMPLE_ADDRESS
    if not 0 <= offset < PILOT_SAMPLE_COUNT:
        raise ValueError(f"pilot map: {name} is outside the sample block")
    return offset


_CP_HIGH = _word("cp_high_mv", DataType.I16)
_CP_LOW = _word("cp_low_mv", DataType.I16)
_DUTY = _word("duty_actual", DataType.U16)
_CC = _word("cc_ohm", DataType.U16)
_STATUS = _word("status", DataType.U16)
_SEQ = _word("sample_seq", DataType.U16)
_TEMP = _word("temperature", DataType.I16)
_TEMP_SCALE = PILOT_BOARD_MAP["temperature"].scale
_FW = _word("fw_version", DataType.U16)


def _i16(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


def decode_sample(raw: list[int]) -> PilotBoardSample:
    """The sample from the 8 words read, field by field: the same values as
    ``registers.decode_block`` of the block, without its per-poll dict and float round trips
    (this runs every 10 ms)."""
    if len(raw) < PILOT_SAMPLE_COUNT:
        raise ValueError(f"pilot sample: need {PILOT_SAMPLE_COUNT} words, got {len(raw)}")
    return PilotBoardSample(
        cp_high_mv=_i16(raw[_CP_HIGH]),
        cp_low_mv=_i16(raw[_CP_LOW]),
        duty_actual=raw[_DUTY],
        cc_ohm=raw[_CC],
        status=raw[_STATUS],
        sample_seq=raw[_SEQ],
        temperature_c=round(_i16(raw[_TEMP]) * _TEMP_SCALE, 1),
        fw_version=raw[_FW],
    )


@dataclass(frozen=True, slots=True)
class PilotBoardWire:
    """Every transaction the pilot board driver runs."""

    sample: Transaction
    duty: Transaction
    heartbeat: Transaction
    watchdog: Transaction
    fault_reset: Transaction

    def all(self) -> tuple[Transaction, ...]:
        return (self.sample, self.duty, self.heartbeat, self.watchdog, self.fault_reset)


def _write(label: str, unit: int, name: str, *, period_s: float | None = None,
           trigger: str = "") -> Transaction:
    reg = PILOT_BOARD_MAP[name]
    return Transaction(label, unit, 6, reg.address, 1, Priority.CONTROL, period_s, trigger)


def pilot_board_wire(unit: int = 1, *, poll_s: float = DEFAULT_POLL_S,
                     heartbeat_s: float = DEFAULT_HEARTBEAT_S) -> PilotBoardWire:
    """The pilot board's transactions: the safety poll every ``poll_s``, the heartbeat every
    ``heartbeat_s``, the rest when the core asks."""
    return PilotBoardWire(
        sample=Transaction("pilot sample", unit, int(SAMPLE_BLOCK.function),
                           SAMPLE_BLOCK.address, SAMPLE_BLOCK.count, Priority.PILOT_POLL,
                           poll_s),
        duty=_write("duty write", unit, "duty_cmd", trigger="duty change"),
        heartbeat=_write("heartbeat", unit, "heartbeat", period_s=heartbeat_s),
        watchdog=_write("watchdog setup", unit, "watchdog_ms", trigger="start-up"),
        fault_reset=_write("fault reset", unit, "fault_reset", trigger="fault reset"),
    )


class PilotBoardDriver:
    """A ``drivers.interfaces.PilotBoard`` on a ``BusScheduler``, running ``wire``."""

    def __init__(self, bus: BusScheduler, unit: int = 1, *,
                 wire: PilotBoardWire | None = None) -> None:
        self.bus = bus
        self.wire = wire or pilot_board_wire(unit)
        self.unit = self.wire.sample.unit

    async def read_sample(self) -> PilotBoardSample:
        return decode_sample(await self.bus.run(self.wire.sample))

    async def set_duty(self, value: int) -> None:
        """``duty_cmd``: 1000 steady +12 V, 0 steady -12 V, 100..970 PWM (0.1 %)."""
        if not duty_cmd_is_valid(value):
            raise ValueError(f"duty_cmd {value} is not 0, 1000 or 100..970")
        await self.bus.run(self.wire.duty, (value,))

    async def set_watchdog(self, ms: int) -> None:
        """``watchdog_ms``: 0 off; the board goes FAILSAFE without a heartbeat this long."""
        if not 0 <= ms <= 0xFFFF:
            raise ValueError(f"watchdog {ms} ms out of 0..65535")
        await self.bus.run(self.wire.watchdog, (ms,))

    async def heartbeat(self) -> None:
        await self.bus.run(self.wire.heartbeat, (1,))

    async def fault_reset(self) -> None:
        await self.bus.run(self.wire.fault_reset, (1,))
