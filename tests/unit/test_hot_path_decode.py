"""The 10 ms poll's direct decoders must give what the generic map decoders give."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.pilot_board import SAMPLE_BLOCK, decode_sample
from drivers.registers import decode_block

WORD = st.integers(min_value=0, max_value=0xFFFF)


@given(st.lists(WORD, min_size=8, max_size=8))
def test_pilot_sample_decodes_as_the_register_map_says(raw: list[int]) -> None:
    v = decode_block(SAMPLE_BLOCK, raw)
    s = decode_sample(raw)
    assert (s.cp_high_mv, s.cp_low_mv, s.duty_actual, s.cc_ohm, s.status, s.sample_seq,
            s.fw_version) == tuple(int(v[k]) for k in (
                "cp_high_mv", "cp_low_mv", "duty_actual", "cc_ohm", "status", "sample_seq",
                "fw_version"))
    assert s.temperature_c == round(v["temperature"], 1)


def test_a_short_sample_is_refused() -> None:
    try:
        decode_sample([0] * 7)
    except ValueError:
        return
    raise AssertionError("7 words decoded as a sample")
