"""The per-cycle CPU histogram the bench reads (P3a): buckets, windows, quantiles."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.shell.cyclecpu import BUCKET_US, BUCKETS, CycleCpu, quantile_us, window


class FakeCpu:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_each_interval_between_marks_lands_in_its_bucket() -> None:
    cpu = FakeCpu()
    h = CycleCpu(cpu)
    h.mark()  # the first mark only starts an interval
    assert h.snapshot() == {}
    for us in (105, 105, 349, 20_000):
        cpu.t += us / 1e6
        h.mark()
    last = str((BUCKETS - 1) * BUCKET_US)
    assert h.snapshot() == {"100": 2, "340": 1, last: 1}


def test_window_and_quantiles() -> None:
    before = {"100": 5}
    after = {"100": 7, "300": 1}
    w = window(before, after)
    assert w == {100: 2, 300: 1}
    assert quantile_us(w, 0.5) == 100 + BUCKET_US / 2
    assert quantile_us(w, 0.99) == 300 + BUCKET_US / 2
    assert quantile_us({}, 0.5) is None


@given(st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=200))
def test_median_is_within_one_bucket_of_the_exact_median(values: list[int]) -> None:
    cpu = FakeCpu()
    h = CycleCpu(cpu)
    h.mark()
    for us in values:
        cpu.t += us / 1e6
        h.mark()
    q = quantile_us({int(k): n for k, n in h.snapshot().items()}, 0.5)
    exact = sorted(values)[(len(values) - 1) // 2]
    assert q is not None and abs(q - exact) <= BUCKET_US
