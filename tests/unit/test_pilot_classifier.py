"""CP and CC classification, and the sample-counting debouncer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.pilot import GBT18487_2015, IEC61851, CcState, CpLevel, Debouncer, classify, classify_cc


@pytest.mark.parametrize(
    ("mv", "gb", "iec"),
    [
        (12000, CpLevel.STATE_1, CpLevel.STATE_1),
        (11200, CpLevel.STATE_1, CpLevel.STATE_1),
        (11100, CpLevel.INVALID, CpLevel.STATE_1),
        (9000, CpLevel.STATE_2, CpLevel.STATE_2),
        (8200, CpLevel.STATE_2, CpLevel.STATE_2),
        (6000, CpLevel.STATE_3, CpLevel.STATE_3),
        (6900, CpLevel.INVALID, CpLevel.STATE_3),
        (7500, CpLevel.INVALID, CpLevel.INVALID),
        (3000, CpLevel.INVALID, CpLevel.STATE_D),
        (0, CpLevel.SHORT, CpLevel.SHORT),
        (900, CpLevel.SHORT, CpLevel.SHORT),
        (-12000, CpLevel.NEGATIVE, CpLevel.NEGATIVE),
        (14000, CpLevel.INVALID, CpLevel.INVALID),
    ],
)
def test_cp_windows(mv: int, gb: CpLevel, iec: CpLevel) -> None:
    assert classify(GBT18487_2015, mv, mv, False).level is gb
    assert classify(IEC61851, mv, mv, False).level is iec


@pytest.mark.parametrize(
    ("high", "low", "pwm", "diode_fault"),
    [
        (9000, -12000, True, False),
        (6000, -12000, True, False),
        (9000, -6000, True, True),  # diode shorted
        (6000, -10000, True, True),
        (9000, 9000, False, False),  # no PWM: no negative plateau to judge
        (12000, 0, True, False),  # nothing connected: not a vehicle diode
    ],
)
def test_diode_check(high: int, low: int, pwm: bool, diode_fault: bool) -> None:
    assert classify(GBT18487_2015, high, low, pwm).diode_fault is diode_fault


@pytest.mark.parametrize(
    ("ohm", "state", "rating"),
    [
        (1500, CcState.VALID, 10.0),
        (680, CcState.VALID, 16.0),
        (220, CcState.VALID, 32.0),
        (100, CcState.VALID, 63.0),
        (0, CcState.SHORT, None),
        (0xFFFF, CcState.OPEN, None),
        (3500, CcState.LATCH_RELEASED, None),
        (2000, CcState.OUT_OF_RANGE, None),
        (10000, CcState.OUT_OF_RANGE, None),
    ],
)
def test_cc_codes_gb(ohm: int, state: CcState, rating: float | None) -> None:
    reading = classify_cc(GBT18487_2015, ohm)
    assert (reading.state, reading.rating_a) == (state, rating)


def test_cc_codes_iec() -> None:
    assert classify_cc(IEC61851, 1500).rating_a == 13.0
    assert classify_cc(IEC61851, 680).rating_a == 20.0


def test_debouncer_needs_n_equal_samples() -> None:
    d: Debouncer[CpLevel] = Debouncer(2)
    assert not d.feed(CpLevel.STATE_1)
    assert d.feed(CpLevel.STATE_1) and d.stable is CpLevel.STATE_1
    assert not d.feed(CpLevel.INVALID)  # one edge sample
    assert not d.feed(CpLevel.STATE_2)
    assert d.feed(CpLevel.STATE_2) and d.stable is CpLevel.STATE_2


def test_debouncer_fast_levels() -> None:
    d: Debouncer[CpLevel] = Debouncer(3, fast={CpLevel.SHORT: 1})
    assert d.feed(CpLevel.SHORT)
    d.restart()
    assert not d.feed(CpLevel.STATE_1) and not d.feed(CpLevel.STATE_1)
    assert d.feed(CpLevel.STATE_1)


def test_debouncer_rejects_zero_samples() -> None:
    with pytest.raises(ValueError):
        Debouncer(0)


@given(st.lists(st.sampled_from(list(CpLevel)), max_size=60), st.integers(1, 4))
def test_debouncer_stable_value_was_seen_n_times_in_a_row(
    seq: list[CpLevel], n: int
) -> None:
    d: Debouncer[CpLevel] = Debouncer(n)
    for i, level in enumerate(seq):
        if d.feed(level):
            assert i + 1 >= n and seq[i + 1 - n : i + 1] == [level] * n
