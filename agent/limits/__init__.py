"""Pure limits engine: layered OCPP-style profiles, setLimit leases, fail-safe, random delay.

No I/O, no clock, no logging: time, context and randomness are inputs (see ``engine.py``).
"""

from agent.limits.context import (
    ChargeContext,
    EngineConfig,
    FailsafeConfig,
    LinkState,
    LocalLimits,
    parse_limit,
)
from agent.limits.delay import PendingDelay, Uniform
from agent.limits.engine import LimitsEngine
from agent.limits.profiles import (
    ChargingProfile,
    Installed,
    Layer,
    Period,
    ProfileKind,
    RateUnit,
    Reason,
    Recurrency,
    Schedule,
    Status,
    profile_from_dict,
    profile_to_dict,
)
from agent.limits.results import (
    ApplyResult,
    CompositeLimit,
    CompositePeriod,
    EffectiveLimit,
)
from agent.limits.station import StationInput
from agent.limits.validation import requires_discharge, validate_profile

__all__ = [
    "ApplyResult",
    "ChargeContext",
    "ChargingProfile",
    "CompositeLimit",
    "CompositePeriod",
    "EffectiveLimit",
    "EngineConfig",
    "FailsafeConfig",
    "Installed",
    "Layer",
    "LimitsEngine",
    "LinkState",
    "LocalLimits",
    "PendingDelay",
    "Period",
    "ProfileKind",
    "RateUnit",
    "Reason",
    "Recurrency",
    "Schedule",
    "StationInput",
    "Status",
    "Uniform",
    "parse_limit",
    "profile_from_dict",
    "profile_to_dict",
    "requires_discharge",
    "validate_profile",
]
