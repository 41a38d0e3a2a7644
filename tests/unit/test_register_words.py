"""One-word registers are decoded without pymodbus's generic converter (a hot path of the 10 ms
pilot poll): the result must equal pymodbus's own conversion for every word."""

from __future__ import annotations

import pytest
from pymodbus.client.mixin import ModbusClientMixin

from drivers.registers import DataType, Function, Register

PYMODBUS = {DataType.U16: ModbusClientMixin.DATATYPE.UINT16,
            DataType.I16: ModbusClientMixin.DATATYPE.INT16}


@pytest.mark.parametrize("dtype", [DataType.U16, DataType.I16])
@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_one_word_decode_equals_pymodbus_for_every_word(dtype: DataType, scale: float) -> None:
    reg = Register("x", 0, Function.INPUT, dtype, scale=scale)
    for word in range(0x10000):
        reference = ModbusClientMixin.convert_from_registers([word], PYMODBUS[dtype])
        assert isinstance(reference, int)
        assert reg.decode([word]) == float(reference) * scale, word
    assert reg.encode(reg.decode([0x8000])) == [0x8000]
