"""One-word registers are decoded without pymodbus's generic converter (a hot path of the 10 ms
pilot poll): the result must equal pymodbus's own conversion for every word and scale."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from drivers.registers import DataType, Function, Register

PYMODBUS = {DataType.U16: ModbusClientMixin.DATATYPE.UINT16,
            DataType.I16: ModbusClientMixin.DATATYPE.INT16}


@given(word=st.integers(0, 0xFFFF), dtype=st.sampled_from([DataType.U16, DataType.I16]),
       scale=st.sampled_from([1.0, 0.1, 0.01, 10.0]))
def test_one_word_decode_equals_pymodbus(word: int, dtype: DataType, scale: float) -> None:
    reg = Register("x", 0, Function.INPUT, dtype, scale=scale)
    reference = ModbusClientMixin.convert_from_registers([word], PYMODBUS[dtype])
    assert isinstance(reference, int)
    assert reg.decode([word]) == float(reference) * scale
    assert reg.encode(reg.decode([word])) == [word]
