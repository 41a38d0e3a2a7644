"""Full-jitter reconnect backoff: bounds, cap, spread (no clocks, no sleeps)."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.link.backoff import backoff_ceiling, backoff_delays, full_jitter


class Extremes:
    """A random source that always returns the top (or bottom) of the range."""

    def __init__(self, top: bool) -> None:
        self.top = top

    def uniform(self, a: float, b: float, /) -> float:
        return b if self.top else a


def test_ceiling_doubles_from_base_until_cap() -> None:
    assert [backoff_ceiling(n, 0.5, 60.0) for n in range(9)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0,
    ]


def test_extremes_of_the_window() -> None:
    assert full_jitter(3, 0.5, 60.0, Extremes(top=True)) == 4.0
    assert full_jitter(3, 0.5, 60.0, Extremes(top=False)) == 0.0


def test_huge_attempt_counts_stay_at_the_cap() -> None:
    assert full_jitter(10_000, 0.5, 60.0, Extremes(top=True)) == 60.0


@given(attempt=st.integers(0, 5000), seed=st.integers(0, 2**32),
       base=st.floats(0.01, 5.0), extra=st.floats(0.0, 300.0))
def test_delay_always_within_zero_and_ceiling(attempt: int, seed: int, base: float,
                                              extra: float) -> None:
    cap = base + extra
    delay = full_jitter(attempt, base, cap, random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(attempt, 63))
    assert delay <= cap


def test_full_jitter_spreads_over_the_whole_window() -> None:
    """Ten thousand chargers after a broker restart must not come back in the same second."""
    rng = random.Random(42)
    delays = [full_jitter(10, 0.5, 60.0, rng) for _ in range(10_000)]
    assert min(delays) < 1.0 and max(delays) > 59.0
    assert 27.0 < statistics.mean(delays) < 33.0  # uniform(0, 60) has mean 30
    per_second = [0] * 60
    for d in delays:
        per_second[min(int(d), 59)] += 1
    assert max(per_second) < 2 * (10_000 / 60)  # no second gets more than twice its share


def test_backoff_delays_iterates_attempts_in_order() -> None:
    delays = backoff_delays(0.5, 60.0, Extremes(top=True))
    assert [next(delays) for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]


def test_same_seed_same_delays() -> None:
    a = backoff_delays(0.5, 60.0, random.Random(7))
    b = backoff_delays(0.5, 60.0, random.Random(7))
    assert [next(a) for _ in range(20)] == [next(b) for _ in range(20)]


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_parameters_are_refused_at_once(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        backoff_delays(base, cap, random.Random(1))
    with pytest.raises(ValueError):
        full_jitter(0, base, cap, random.Random(1))


def test_negative_attempt_refused() -> None:
    with pytest.raises(ValueError):
        backoff_ceiling(-1, 0.5, 60.0)
