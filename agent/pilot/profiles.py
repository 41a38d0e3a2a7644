"""Pilot profiles: the numbers of one standard (CP windows, duty <-> current, CC codes).

Sources are in ``../shared/research/gbt18487.md``. Duties are in the pilot board's register
units, 0.1 % (``duty_cmd``): 1000 = steady +12 V (no PWM), 0 = steady -12 V, 100..970 = PWM.

Rounding rule: :func:`current_to_duty` never offers more than asked. It returns the largest
legal duty whose current (per :func:`duty_to_current`) is <= the request, so a set-point that
falls in the gap of the norm between 51 A (85 %) and 52.5 A (85.1 % -> 52.75 A) is offered 51 A.
Exact rational arithmetic (``Fraction``) keeps a float request from rounding one step up.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType

__all__ = [
    "DUTY_PWM_MAX",
    "DUTY_PWM_MIN",
    "DUTY_STEADY_NEGATIVE",
    "DUTY_STEADY_POSITIVE",
    "GBT18487_2015",
    "IEC61851",
    "PROFILES",
    "CableCode",
    "PilotProfile",
    "Window",
    "current_to_duty",
    "duty_to_current",
    "is_legal_pwm_duty",
]

# Copied from drivers/board_maps.py (which imports pymodbus); a unit test keeps them equal.
DUTY_STEADY_POSITIVE = 1000
DUTY_STEADY_NEGATIVE = 0
DUTY_PWM_MIN = 100
DUTY_PWM_MAX = 970

_LOW_SEGMENT_MAX_DUTY = 850  # 85 %: end of D = I / 0.6 (51 A)
_MIN_CURRENT = Fraction(6)


@dataclass(frozen=True, slots=True)
class Window:
    """A closed interval [low, high] of a measured integer (mV or ohm)."""

    low: int
    high: int

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high


@dataclass(frozen=True, slots=True)
class CableCode:
    """One CC (PP) resistor code: its acceptance window and the cable's current rating."""

    nominal_ohm: int
    window: Window
    rating_a: float


@dataclass(frozen=True, slots=True)
class PilotProfile:
    """The standard-dependent numbers the classifier and the machine use."""

    name: str
    standard: str
    state_1: Window
    state_2: Window
    state_3: Window
    state_d: Window | None  # None: the standard has no ventilation state (GB)
    short: Window
    negative: Window
    diode_low_max_mv: int  # with PWM on and a vehicle, cp_low above this = diode fault
    max_current_a: float
    cable_codes: tuple[CableCode, ...]
    latch_released: Window | None  # CC with S3 open (RC + R4); None if not applicable

    @property
    def max_duty(self) -> int:
        """The highest PWM duty this profile ever emits (its current cap)."""
        return _max_duty(self)


# The exact (Fraction) arithmetic costs ~10 us a call and the machine asks several times per
# 10 ms step with the same few values; both functions are pure, so their results are memoised.
@functools.lru_cache(maxsize=16)
def _max_duty(profile: PilotProfile) -> int:
    return _duty_for(profile, Fraction(profile.max_current_a))


def _duty_for(profile: PilotProfile, amps: Fraction) -> int:
    amps = min(amps, Fraction(profile.max_current_a))
    low = math.floor(amps * 100 / 6)  # D[0.1 %] = I / 0.6 * 10
    high = math.floor(amps * 4 + 640)  # D[0.1 %] = (I / 2.5 + 64) * 10
    if high > _LOW_SEGMENT_MAX_DUTY:
        return high
    return min(low, _LOW_SEGMENT_MAX_DUTY)


@functools.lru_cache(maxsize=1024)
def current_to_duty(profile: PilotProfile, amps: float) -> int | None:
    """Duty (0.1 %) to advertise ``amps``; None below 6 A (the caller pauses instead)."""
    if not math.isfinite(amps) or amps < _MIN_CURRENT:
        return None
    return _duty_for(profile, Fraction(amps))


def _duty_current(duty: int) -> Fraction:
    if duty <= _LOW_SEGMENT_MAX_DUTY:
        return Fraction(duty * 6, 100)
    return (Fraction(duty, 10) - 64) * Fraction(5, 2)


def duty_to_current(profile: PilotProfile, duty: int) -> float:
    """Maximum current (A) a legal PWM duty advertises; 0.0 for steady levels.

    Raises:
        ValueError: ``duty`` is neither steady nor a legal PWM duty of ``profile``.
    """
    if duty in (DUTY_STEADY_POSITIVE, DUTY_STEADY_NEGATIVE):
        return 0.0
    if not is_legal_pwm_duty(profile, duty):
        raise ValueError(f"duty {duty} is not a legal PWM duty of {profile.name}")
    return float(_duty_current(duty))


def is_legal_pwm_duty(profile: PilotProfile, duty: int) -> bool:
    """A PWM duty this profile may emit: 10 % up to its current cap."""
    return DUTY_PWM_MIN <= duty <= profile.max_duty


def _codes(*codes: tuple[int, int, int, float]) -> tuple[CableCode, ...]:
    return tuple(CableCode(nom, Window(lo, hi), amps) for nom, lo, hi, amps in codes)


GBT18487_2015 = PilotProfile(
    name="gbt18487-2015",
    standard="GB/T 18487.1-2015 Annex A",
    state_1=Window(11200, 12800),
    state_2=Window(8200, 9800),
    state_3=Window(5200, 6800),
    state_d=None,
    short=Window(-1000, 1000),
    negative=Window(-12800, -11200),
    diode_low_max_mv=-10500,
    max_current_a=63.0,
    # RC codes per GB; windows are a vehicle BMS's (vendor, not the standard's tolerance).
    cable_codes=_codes(
        (100, 25, 140, 63.0), (220, 141, 360, 32.0), (680, 361, 940, 16.0),
        (1500, 941, 1650, 10.0),
    ),
    # Pressing the plug latch opens S3 and adds R4 (about 1.8-3.3 kOhm) in series with RC.
    latch_released=Window(2800, 4500),
)

IEC61851 = PilotProfile(
    name="iec61851",
    standard="IEC 61851-1 Annex A",
    state_1=Window(11000, 13000),
    state_2=Window(8000, 10000),
    state_3=Window(5000, 7000),
    state_d=Window(2000, 4000),
    short=Window(-1000, 1000),
    negative=Window(-13000, -11000),
    diode_low_max_mv=-10500,
    max_current_a=80.0,
    cable_codes=_codes(
        (100, 75, 150, 63.0), (220, 151, 330, 32.0), (680, 331, 1000, 20.0),
        (1500, 1001, 2200, 13.0),
    ),
    latch_released=None,
)

PROFILES = MappingProxyType({p.name: p for p in (GBT18487_2015, IEC61851)})
