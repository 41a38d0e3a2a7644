"""Pure classification of pilot-board samples: CP volts to a level, CC ohms to a cable code.

Nothing here keeps time; :class:`Debouncer` counts samples, not seconds.

Reaction budget (GB/T 34657.1 asks <= 100 ms from the CP change to the contactor open): the
board produces a new CP measurement at least every 10 ms and the shell polls it every 10 ms. A
change at t0 is in the first sample taken after t0 (<= 10 ms) and, with ``samples=2``, becomes
stable on the next one (another 10 ms). So the debounce adds at most one poll period to the
detection; the open is emitted in the step that sees the stable level. What remains of the
100 ms is the shell's: the Modbus transactions (read, then the coil write) and the contactor's
own drop-out time. Levels that demand immediate action (e.g. ``SHORT``) may be configured with
``fast={CpLevel.SHORT: 1}``, which removes that extra period for them only; a level seen while
the edge is moving (between windows, ``INVALID``) is never a fault on one sample.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from agent.pilot.profiles import PilotProfile

__all__ = [
    "CONNECTED_LEVELS",
    "CcReading",
    "CcState",
    "CpLevel",
    "Debouncer",
    "Reading",
    "classify",
    "classify_cc",
]

CC_OPEN_OHM = 0xFFFF  # copy of drivers/board_maps.CC_OPEN_OHM


class CpLevel(Enum):
    """Debounce-able CP level at detection point 1 (GB numbering, IEC letters in comments)."""

    STATE_1 = "1"  # 12 V, nothing connected (IEC A)
    STATE_2 = "2"  # 9 V, vehicle connected, S2 open (IEC B)
    STATE_3 = "3"  # 6 V, vehicle ready, S2 closed (IEC C)
    STATE_D = "D"  # 3 V, IEC ventilation request; GB has none
    SHORT = "short"  # about 0 V: CP shorted to PE (GB '0', IEC E)
    NEGATIVE = "negative"  # steady -12 V (IEC F); we never command it
    INVALID = "invalid"  # outside every window


CONNECTED_LEVELS = frozenset({CpLevel.STATE_2, CpLevel.STATE_3, CpLevel.STATE_D})


@dataclass(frozen=True, slots=True)
class Reading:
    """One classified CP sample."""

    level: CpLevel
    diode_fault: bool
    cp_high_mv: int
    cp_low_mv: int
    pwm_on: bool


def _level(profile: PilotProfile, mv: int) -> CpLevel:
    windows = (
        (profile.state_1, CpLevel.STATE_1),
        (profile.state_2, CpLevel.STATE_2),
        (profile.state_3, CpLevel.STATE_3),
        (profile.state_d, CpLevel.STATE_D),
        (profile.short, CpLevel.SHORT),
        (profile.negative, CpLevel.NEGATIVE),
    )
    for window, level in windows:
        if window is not None and mv in window:
            return level
    return CpLevel.INVALID


def classify(profile: PilotProfile, cp_high_mv: int, cp_low_mv: int, pwm_on: bool) -> Reading:
    """Classify one sample; ``pwm_on`` is whether the board was outputting PWM (duty_actual).

    The diode check needs the negative plateau, so it applies only while PWM runs and a
    vehicle is connected: a healthy vehicle diode keeps ``cp_low_mv`` near -12 V.
    """
    level = _level(profile, cp_high_mv)
    diode_fault = (
        pwm_on and level in CONNECTED_LEVELS and cp_low_mv > profile.diode_low_max_mv
    )
    return Reading(level, diode_fault, cp_high_mv, cp_low_mv, pwm_on)


class CcState(Enum):
    """What the CC (PP) resistance at detection point 4 says about the cable."""

    VALID = "valid"
    LATCH_RELEASED = "latch released"  # S3 open: plug latch pressed, RC + R4
    OPEN = "open"
    SHORT = "short"
    OUT_OF_RANGE = "out of range"


@dataclass(frozen=True, slots=True)
class CcReading:
    """A classified CC sample; ``rating_a`` only for ``VALID``."""

    state: CcState
    rating_a: float | None = None


def classify_cc(profile: PilotProfile, cc_ohm: int) -> CcReading:
    """Map the CC resistance to the cable rating of the profile's table."""
    if cc_ohm == CC_OPEN_OHM:
        return CcReading(CcState.OPEN)
    for code in profile.cable_codes:
        if cc_ohm in code.window:
            return CcReading(CcState.VALID, code.rating_a)
    if cc_ohm < min(c.window.low for c in profile.cable_codes):
        return CcReading(CcState.SHORT)
    if profile.latch_released is not None and cc_ohm in profile.latch_released:
        return CcReading(CcState.LATCH_RELEASED)
    return CcReading(CcState.OUT_OF_RANGE)


T = TypeVar("T", bound=Hashable)


class Debouncer(Generic[T]):
    """Reports a new stable value after ``samples`` consecutive equal samples.

    ``fast`` lowers the count for chosen values (never below 1). Deterministic: the result
    depends only on the sequence fed, so replaying samples replays decisions.
    """

    def __init__(self, samples: int = 2, fast: Mapping[T, int] | None = None) -> None:
        if samples < 1:
            raise ValueError("samples must be >= 1")
        self._samples = samples
        self._fast = {k: max(1, v) for k, v in (fast or {}).items()}
        self._candidate: T | None = None
        self._count = 0
        self._stable: T | None = None

    @property
    def stable(self) -> T | None:
        """The last stable value (None before the first one)."""
        return self._stable

    def feed(self, value: T) -> bool:
        """Add one sample; True when it made ``value`` the new stable value."""
        if value == self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = value, 1
        if value != self._stable and self._count >= self._fast.get(value, self._samples):
            self._stable = value
            return True
        return False

    def restart(self) -> None:
        """Forget the candidate (after a gap in the samples); the stable value is kept."""
        self._candidate, self._count = None, 0
