"""P2's floor (hil/bench/p2_floor.py): computed from the config and the wire plan, not typed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hil.bench.common import bench_config, default_config_data
from hil.bench.p2_floor import ReactionFloor, reaction_floor


def test_the_example_config_floor_by_hand() -> None:
    floor = reaction_floor(bench_config())
    assert floor.period_s == 0.010
    assert floor.samples == {"s2_open": 2, "unplug": 2, "cp_short": 1}
    char = 10 / 115200  # 8N1 at 115200 Bd
    fixed = 21 * char + 0.00175 + 8 * char  # 8-register answer, t3.5, FC05 request
    assert floor.fixed_s == pytest.approx(fixed)
    assert floor.quantile(50, {"unplug": 1}) == pytest.approx(0.010 + 0.005 + fixed)
    assert floor.quantile(99, {"s2_open": 1}) == pytest.approx(0.010 + 0.0099 + fixed)
    assert floor.quantile(99, {"cp_short": 1}) == pytest.approx(0.0099 + fixed)


def test_the_floor_follows_poll_debounce_and_baud_rate() -> None:
    data = default_config_data()
    data["connectors"][0]["pilot_board"]["poll_ms"] = 20
    data["connectors"][0]["pilot_board"]["idle_poll_ms"] = 40
    data["buses"]["control"]["baudrate"] = 57600
    data["safety"] = {**data.get("safety", {}), "debounce_samples": 3}
    floor = reaction_floor(bench_config(base=data))
    char = 10 / 57600
    fixed = 21 * char + 0.00175 + 8 * char
    assert floor.samples == {"s2_open": 3, "unplug": 3, "cp_short": 1}
    assert floor.quantile(50, {"s2_open": 1}) == pytest.approx(2 * 0.020 + 0.010 + fixed)


def test_equal_parts_of_one_and_two_sample_kinds_have_their_median_at_one_period() -> None:
    floor = ReactionFloor(0.010, {"a": 1, "b": 2}, {"line": 0.004})
    assert floor.quantile(50, {"a": 1, "b": 1}) == pytest.approx(0.014)
    assert floor.cdf(0.004, {"a": 1, "b": 1}) == 0.0
    assert floor.cdf(0.024, {"a": 1, "b": 1}) == 1.0


@given(st.floats(0.5, 100.0), st.floats(0.01, 5.0), st.floats(0.01, 5.0))
def test_the_quantile_inverts_the_cdf(p: float, wa: float, wb: float) -> None:
    floor = ReactionFloor(0.010, {"a": 1, "b": 2}, {"line": 0.004})
    weights = {"a": wa, "b": wb}
    assert floor.cdf(floor.quantile(p, weights), weights) == pytest.approx(p / 100, abs=1e-9)

