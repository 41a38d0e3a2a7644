"""Duty <-> current: the profile tables, and properties that hold for every current."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.pilot import GBT18487_2015, IEC61851, PROFILES, PilotProfile
from agent.pilot.profiles import (
    DUTY_PWM_MAX,
    DUTY_PWM_MIN,
    DUTY_STEADY_NEGATIVE,
    DUTY_STEADY_POSITIVE,
    current_to_duty,
    duty_to_current,
    is_legal_pwm_duty,
)

profiles = st.sampled_from([GBT18487_2015, IEC61851])
amps = st.floats(-10.0, 200.0) | st.sampled_from([math.nan, math.inf, -math.inf])


@pytest.mark.parametrize(
    ("profile", "current", "duty"),
    [
        (GBT18487_2015, 6.0, 100),
        (GBT18487_2015, 10.0, 166),
        (GBT18487_2015, 16.0, 266),
        (GBT18487_2015, 32.0, 533),  # [CSDK] 53.3 %
        (GBT18487_2015, 51.0, 850),
        (GBT18487_2015, 52.0, 850),  # gap of the norm: offered 51 A, never more
        (GBT18487_2015, 52.75, 851),
        (GBT18487_2015, 63.0, 892),  # [CSDK] 89.2 %
        (GBT18487_2015, 80.0, 892),  # capped at 63 A
        (IEC61851, 63.0, 892),
        (IEC61851, 80.0, 960),  # 96 %
        (IEC61851, 100.0, 960),
    ],
)
def test_duty_table(profile: PilotProfile, current: float, duty: int) -> None:
    assert current_to_duty(profile, current) == duty


@pytest.mark.parametrize("current", [5.99, 0.0, -1.0, math.nan, -math.inf])
def test_below_6a_means_pause(current: float) -> None:
    assert current_to_duty(GBT18487_2015, current) is None


def test_duty_to_current_examples() -> None:
    assert duty_to_current(GBT18487_2015, 100) == pytest.approx(6.0)
    assert duty_to_current(GBT18487_2015, 850) == pytest.approx(51.0)
    assert duty_to_current(GBT18487_2015, 892) == pytest.approx(63.0)
    assert duty_to_current(IEC61851, 960) == pytest.approx(80.0)
    assert duty_to_current(GBT18487_2015, DUTY_STEADY_POSITIVE) == 0.0
    with pytest.raises(ValueError):
        duty_to_current(GBT18487_2015, 900)  # legal for the board, above the GB cap


def test_registry_and_max_duties() -> None:
    assert PROFILES["gbt18487-2015"] is GBT18487_2015 and PROFILES["iec61851"] is IEC61851
    assert GBT18487_2015.max_duty == 892 and IEC61851.max_duty == 960


def test_constants_match_the_board_map() -> None:
    board_maps = pytest.importorskip("drivers.board_maps")
    assert (DUTY_STEADY_POSITIVE, DUTY_STEADY_NEGATIVE, DUTY_PWM_MIN, DUTY_PWM_MAX) == (
        board_maps.DUTY_STEADY_POSITIVE,
        board_maps.DUTY_STEADY_NEGATIVE,
        board_maps.DUTY_PWM_MIN,
        board_maps.DUTY_PWM_MAX,
    )


@given(profiles, amps)
def test_never_offers_more_than_asked_and_never_an_illegal_duty(
    profile: PilotProfile, current: float
) -> None:
    duty = current_to_duty(profile, current)
    if duty is None:
        assert not (math.isfinite(current) and current >= 6.0)  # NaN/inf: refused
        return
    assert is_legal_pwm_duty(profile, duty)
    assert DUTY_PWM_MIN <= duty <= DUTY_PWM_MAX
    offered = duty_to_current(profile, duty)
    assert 6.0 <= offered <= min(current, profile.max_current_a)


@given(profiles, st.floats(6.0, 200.0), st.floats(6.0, 200.0))
def test_monotonic(profile: PilotProfile, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert current_to_duty(profile, lo) <= current_to_duty(profile, hi)  # type: ignore[operator]


@given(profiles, st.integers(DUTY_PWM_MIN, 960))
def test_round_trip_from_a_duty_loses_at_most_one_step(profile: PilotProfile, duty: int) -> None:
    if not is_legal_pwm_duty(profile, duty):
        return
    # a float current may sit a hair below the exact value; flooring then takes one step down
    back = current_to_duty(profile, duty_to_current(profile, duty))
    assert back in (duty - 1, duty)


@given(profiles, st.floats(6.0, 200.0))
def test_offer_is_within_one_step_of_the_request(profile: PilotProfile, current: float) -> None:
    duty = current_to_duty(profile, current)
    assert duty is not None
    asked = min(current, profile.max_current_a)
    # one 0.1 % step is 0.06 A (low segment) or 0.25 A (high); the norm's gap is 51..52.75 A
    assert asked - duty_to_current(profile, duty) <= 1.75
