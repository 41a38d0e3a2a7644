"""Profile validation per OCPP 2.0.1 K01, returning a stable reason code.

Rules, each with its K01 requirement where there is one:

| rule                                                        | reason            | K01      |
|-------------------------------------------------------------|-------------------|----------|
| unit is one the station supports                            | UNIT_UNSUPPORTED  | FR.26    |
| at most ``max_periods`` periods                             | TOO_MANY_PERIODS  |          |
| at least one period                                         | INVALID_SCHEDULE  |          |
| first offset is 0                                           | INVALID_SCHEDULE  | FR.31    |
| offsets strictly increasing                                 | INVALID_SCHEDULE  | FR.35    |
| siteMax is never relative                                   | INVALID_SCHEDULE  | FR.38    |
| siteMax addresses the station, never one connector          | INVALID_SCHEDULE  | FR.03    |
| absolute/recurring need a start (startAt or validFrom)      | INVALID_SCHEDULE  | FR.40    |
| relative has no startAt                                     | INVALID_SCHEDULE  | FR.41    |
| recurring has a recurrency, others none                     | INVALID_SCHEDULE  |          |
| recurring periods and duration fit in one recurrence        | INVALID_SCHEDULE  |          |
| limits finite and >= 0 (negative: see requires_discharge)   | INVALID_SCHEDULE  |          |
| stackLevel >= 0, durations > 0, validFrom < validTo, ...    | INVALID_SCHEDULE  |          |

A negative limit means discharge (V2G): the caller checks :func:`requires_discharge` first and
answers ``notSupported`` when the hardware cannot discharge.
"""

from __future__ import annotations

import math
from itertools import pairwise

from agent.limits.context import DEFAULT_MAX_PERIODS
from agent.limits.profiles import (
    RECURRENCE_S,
    ChargingProfile,
    Layer,
    ProfileKind,
    RateUnit,
    Reason,
)

_ALL_UNITS = frozenset(RateUnit)


def requires_discharge(profile: ChargingProfile) -> bool:
    """True when any period asks for a negative limit (discharge)."""
    return any(p.limit < 0 for p in profile.schedule.periods)


def _finite_nonneg(value: float | None) -> bool:
    return value is None or (math.isfinite(value) and value >= 0)


def validate_profile(
    profile: ChargingProfile,
    *,
    max_periods: int = DEFAULT_MAX_PERIODS,
    supported_units: frozenset[RateUnit] = _ALL_UNITS,
) -> Reason:
    s = profile.schedule
    if s.unit not in supported_units:
        return Reason.UNIT_UNSUPPORTED
    if len(s.periods) > max_periods:
        return Reason.TOO_MANY_PERIODS
    if not s.periods or s.periods[0].offset_s != 0:
        return Reason.INVALID_SCHEDULE
    offsets = [p.offset_s for p in s.periods]
    if any(not math.isfinite(o) for o in offsets):
        return Reason.INVALID_SCHEDULE
    if any(b <= a for a, b in pairwise(offsets)):
        return Reason.INVALID_SCHEDULE
    if any(not math.isfinite(p.limit) or p.limit < 0 for p in s.periods):
        return Reason.INVALID_SCHEDULE
    if any(p.phases is not None and p.phases not in (1, 2, 3) for p in s.periods):
        return Reason.INVALID_SCHEDULE
    if profile.stack_level < 0:
        return Reason.INVALID_SCHEDULE
    if profile.connector is not None and profile.connector < 1:
        return Reason.INVALID_SCHEDULE
    for value in (s.start_at, profile.valid_from, profile.valid_to):
        if value is not None and not math.isfinite(value):
            return Reason.INVALID_SCHEDULE
    if not (_finite_nonneg(s.randomize_start_s) and _finite_nonneg(profile.max_offline_s)):
        return Reason.INVALID_SCHEDULE
    if s.duration_s is not None and not (math.isfinite(s.duration_s) and s.duration_s > 0):
        return Reason.INVALID_SCHEDULE
    if (
        profile.valid_from is not None
        and profile.valid_to is not None
        and profile.valid_to <= profile.valid_from
    ):
        return Reason.INVALID_SCHEDULE
    return _validate_kind(profile)


def _validate_kind(profile: ChargingProfile) -> Reason:
    s = profile.schedule
    if profile.layer is Layer.SITE_MAX and profile.connector is not None:
        return Reason.INVALID_SCHEDULE  # the station's limit (OCPP K01.FR.03: evseId 0)
    if profile.kind is ProfileKind.RELATIVE:
        if profile.layer is Layer.SITE_MAX or s.start_at is not None:
            return Reason.INVALID_SCHEDULE
    elif s.start_at is None and profile.valid_from is None:
        return Reason.INVALID_SCHEDULE
    if profile.kind is ProfileKind.RECURRING:
        if profile.recurrency is None:
            return Reason.INVALID_SCHEDULE
        cycle = RECURRENCE_S[profile.recurrency]
        if s.periods[-1].offset_s >= cycle:
            return Reason.INVALID_SCHEDULE
        if s.duration_s is not None and s.duration_s > cycle:
            return Reason.INVALID_SCHEDULE
    elif profile.recurrency is not None:
        return Reason.INVALID_SCHEDULE
    return Reason.OK
