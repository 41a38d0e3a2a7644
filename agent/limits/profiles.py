"""Data types of the limits engine: OCPP-style charging profiles as plain frozen dataclasses.

The pydantic command models live in the shell and convert into these; nothing here validates on
construction (see ``validation.py``), so a profile can be built, checked, and then installed.
Times are float epoch seconds UTC; limits are in the schedule's unit (A per phase, or W total).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any


class Layer(Enum):
    """Profile layers (OCPP purposes); the composite is the minimum over layers."""

    SITE_MAX = "siteMax"
    GRID = "grid"
    DEFAULT = "default"
    SESSION = "session"


class ProfileKind(Enum):
    ABSOLUTE = "absolute"
    RECURRING = "recurring"
    RELATIVE = "relative"


class Recurrency(Enum):
    DAILY = "daily"
    WEEKLY = "weekly"


class RateUnit(Enum):
    A = "A"
    W = "W"


class Reason(StrEnum):
    """Stable reason codes of the API (the subset the limits engine can produce)."""

    OK = "OK"
    INVALID_SCHEDULE = "INVALID_SCHEDULE"
    UNIT_UNSUPPORTED = "UNIT_UNSUPPORTED"
    TOO_MANY_PERIODS = "TOO_MANY_PERIODS"
    LOCAL_CONSTRAINT = "LOCAL_CONSTRAINT"
    NO_ACTIVE_SESSION = "NO_ACTIVE_SESSION"


class Status(StrEnum):
    """Reply status the shell puts into ``rsp`` for a command the engine handled."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    NOT_SUPPORTED = "notSupported"


RECURRENCE_S: dict[Recurrency, float] = {Recurrency.DAILY: 86_400.0, Recurrency.WEEKLY: 604_800.0}


@dataclass(frozen=True, slots=True)
class Period:
    """One step of a schedule; ``phases`` is informational (see engine docs on W -> A)."""

    offset_s: float
    limit: float
    phases: int | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    unit: RateUnit
    periods: tuple[Period, ...]
    start_at: float | None = None
    duration_s: float | None = None
    randomize_start_s: float | None = None


@dataclass(frozen=True, slots=True)
class ChargingProfile:
    """A layered, stacked limit schedule. ``connector`` None applies to every connector.

    ``dsr`` marks a grid response: increases it causes skip the randomised delay.
    ``commanded_kw``: the command gave kW; the schedule holds W, events echo the kW it sent.
    """

    profile_id: str
    layer: Layer
    stack_level: int
    kind: ProfileKind
    schedule: Schedule
    recurrency: Recurrency | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    max_offline_s: float | None = None
    connector: int | None = None
    source_command_id: str | None = None
    dsr: bool = False
    commanded_kw: bool = False


@dataclass(frozen=True, slots=True)
class Installed:
    """A profile as held by the engine: what receipt time, which session and which drawn
    start spread it was installed with (all needed to evaluate it deterministically later)."""

    profile: ChargingProfile
    installed_at: float
    session_start: float | None = None
    start_delay_s: float = 0.0


# ---------------------------------------------------------------- JSON-compatible persistence


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _num(value: float) -> float | None:
    """Infinity and NaN are not JSON; profiles never hold them after validation."""
    return value if math.isfinite(value) else None


def profile_to_dict(profile: ChargingProfile) -> dict[str, Any]:
    s = profile.schedule
    return {
        "profileId": profile.profile_id,
        "layer": profile.layer.value,
        "stackLevel": profile.stack_level,
        "kind": profile.kind.value,
        "recurrency": None if profile.recurrency is None else profile.recurrency.value,
        "validFrom": profile.valid_from,
        "validTo": profile.valid_to,
        "maxOfflineS": profile.max_offline_s,
        "connector": profile.connector,
        "sourceCommandId": profile.source_command_id,
        "dsr": profile.dsr,
        "commandedKw": profile.commanded_kw,
        "schedule": {
            "unit": s.unit.value,
            "startAt": s.start_at,
            "durationS": s.duration_s,
            "randomizeStartS": s.randomize_start_s,
            "periods": [
                {"offsetS": _num(p.offset_s), "limit": _num(p.limit), "phases": p.phases}
                for p in s.periods
            ],
        },
    }


def profile_from_dict(data: dict[str, Any]) -> ChargingProfile:
    s = data["schedule"]
    recurrency = data.get("recurrency")
    return ChargingProfile(
        profile_id=str(data["profileId"]),
        layer=Layer(data["layer"]),
        stack_level=int(data["stackLevel"]),
        kind=ProfileKind(data["kind"]),
        schedule=Schedule(
            unit=RateUnit(s["unit"]),
            periods=tuple(
                Period(float(p["offsetS"]), float(p["limit"]), _opt_int(p.get("phases")))
                for p in s["periods"]
            ),
            start_at=_opt_float(s.get("startAt")),
            duration_s=_opt_float(s.get("durationS")),
            randomize_start_s=_opt_float(s.get("randomizeStartS")),
        ),
        recurrency=None if recurrency is None else Recurrency(recurrency),
        valid_from=_opt_float(data.get("validFrom")),
        valid_to=_opt_float(data.get("validTo")),
        max_offline_s=_opt_float(data.get("maxOfflineS")),
        connector=_opt_int(data.get("connector")),
        source_command_id=data.get("sourceCommandId"),
        dsr=bool(data.get("dsr", False)),
        commanded_kw=bool(data.get("commandedKw", False)),
    )


def installed_to_dict(entry: Installed) -> dict[str, Any]:
    return {
        "profile": profile_to_dict(entry.profile),
        "installedAt": entry.installed_at,
        "sessionStart": entry.session_start,
        "startDelayS": entry.start_delay_s,
    }


def installed_from_dict(data: dict[str, Any]) -> Installed:
    return Installed(
        profile=profile_from_dict(data["profile"]),
        installed_at=float(data["installedAt"]),
        session_start=_opt_float(data.get("sessionStart")),
        start_delay_s=float(data.get("startDelayS", 0.0)),
    )
