"""Register maps as data: the one description both the drivers and the HIL simulators use.

A ``Register`` names one value on a device: where it is (function, 0-based PDU address), how it
is encoded (data type, word order) and how raw numbers become engineering units (scale).
Drivers read maps; ``hil/`` serves the same maps from the device side. Nothing here does I/O.
Encoding and decoding of multi-word values is delegated to pymodbus's own converters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Literal

from pymodbus.client.mixin import ModbusClientMixin

WordOrder = Literal["big", "little"]


class Function(IntEnum):
    """Modbus read function code of the table a register lives in."""

    COIL = 1
    DISCRETE_INPUT = 2
    HOLDING = 3
    INPUT = 4


class DataType(Enum):
    """Encoding of a value in 16-bit registers (or a single bit for coils/discrete inputs)."""

    BIT = "bit"
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    F32 = "f32"

    @property
    def words(self) -> int:
        return 2 if self in (DataType.U32, DataType.I32, DataType.F32) else 1


_PYMODBUS_TYPE = {
    DataType.U16: ModbusClientMixin.DATATYPE.UINT16,
    DataType.I16: ModbusClientMixin.DATATYPE.INT16,
    DataType.U32: ModbusClientMixin.DATATYPE.UINT32,
    DataType.I32: ModbusClientMixin.DATATYPE.INT32,
    DataType.F32: ModbusClientMixin.DATATYPE.FLOAT32,
}


@dataclass(frozen=True, slots=True)
class Register:
    """One value of a device map. ``value = raw * scale`` in ``unit``."""

    name: str
    address: int
    function: Function
    dtype: DataType = DataType.U16
    scale: float = 1.0
    unit: str = ""
    word_order: WordOrder = "big"
    writable: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 0xFFFF:
            raise ValueError(f"register {self.name}: address {self.address} out of 0..65535")
        is_bit_table = self.function in (Function.COIL, Function.DISCRETE_INPUT)
        if is_bit_table != (self.dtype is DataType.BIT):
            raise ValueError(f"register {self.name}: {self.dtype.value} in {self.function.name}")

    @property
    def words(self) -> int:
        """Registers (or bits) the value occupies."""
        return self.dtype.words

    @property
    def end(self) -> int:
        """First address after this value."""
        return self.address + self.words

    def decode(self, raw: Sequence[int]) -> float:
        """Raw register words -> engineering value (scale applied)."""
        if len(raw) != self.words:
            raise ValueError(f"register {self.name}: need {self.words} words, got {len(raw)}")
        if self.dtype is DataType.BIT:
            return float(bool(raw[0]))
        if self.dtype is DataType.U16:  # one word: the common case of the 10 ms pilot poll,
            return float(raw[0]) * self.scale  # where pymodbus's generic path cost ~5 us a word
        if self.dtype is DataType.I16:
            word = raw[0]
            return float(word - 0x10000 if word & 0x8000 else word) * self.scale
        value = ModbusClientMixin.convert_from_registers(
            list(raw), _PYMODBUS_TYPE[self.dtype], word_order=self.word_order
        )
        assert isinstance(value, int | float)
        return float(value) * self.scale

    def encode(self, value: float) -> list[int]:
        """Engineering value -> raw register words (inverse of ``decode``)."""
        if self.dtype is DataType.BIT:
            return [1 if value else 0]
        raw = value / self.scale if self.scale != 1.0 else value
        if self.dtype is not DataType.F32:
            raw = round(raw)
        return list(
            ModbusClientMixin.convert_to_registers(
                raw, _PYMODBUS_TYPE[self.dtype], word_order=self.word_order
            )
        )


@dataclass(frozen=True, slots=True)
class Block:
    """A contiguous run of registers read in one transaction."""

    function: Function
    address: int
    count: int
    registers: tuple[Register, ...]


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """All registers of one device model, by name."""

    model: str
    registers: tuple[Register, ...]
    by_name: dict[str, Register] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [r.name for r in self.registers]
        if len(set(names)) != len(names):
            raise ValueError(f"map {self.model}: duplicate register names")
        object.__setattr__(self, "by_name", {r.name: r for r in self.registers})

    def __getitem__(self, name: str) -> Register:
        return self.by_name[name]

    def __iter__(self) -> Iterator[Register]:
        return iter(self.registers)

    def blocks(
        self, names: Iterable[str] | None = None, *, max_words: int = 125, max_gap: int = 0
    ) -> list[Block]:
        """Group the named registers into read transactions.

        Registers of one function whose addresses are at most ``max_gap`` words apart share a
        block, and no block exceeds ``max_words``. A small ``max_words`` splits long reads so
        that no single meter transaction holds the bus for long (see ``drivers.bus``).
        """
        chosen = self.registers if names is None else tuple(self.by_name[n] for n in names)
        out: list[Block] = []
        for function in Function:
            regs = sorted((r for r in chosen if r.function is function), key=lambda r: r.address)
            current: list[Register] = []
            for reg in regs:
                if current and (
                    reg.address - current[-1].end > max_gap
                    or reg.end - current[0].address > max_words
                ):
                    out.append(_block(function, current))
                    current = []
                current.append(reg)
            if current:
                out.append(_block(function, current))
        return out


def _block(function: Function, regs: list[Register]) -> Block:
    start = regs[0].address
    end = max(r.end for r in regs)
    return Block(function, start, end - start, tuple(regs))


def decode_block(block: Block, raw: Sequence[int]) -> dict[str, float]:
    """Values of every register in a block from the words (or bits) read for it."""
    if len(raw) < block.count:
        raise ValueError(f"block at {block.address}: need {block.count} words, got {len(raw)}")
    return {
        r.name: r.decode(raw[r.address - block.address : r.end - block.address])
        for r in block.registers
    }
