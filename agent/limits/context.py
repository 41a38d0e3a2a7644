"""Inputs of the limits engine besides profiles: configuration, the per-call context, units.

Unit conversion (the spec leaves the 3-phase case open): a W limit is a total power; the engine
offers a per-phase current, so ``A = W / sum(V_i for the phases in use)``. With balanced voltages
that is ``W / (phases * V_phase)``, e.g. 11 kW on 3 x 230 V = 15.9 A per phase. Measured voltages
are used when plausible (>= half nominal), the configured nominal otherwise. Phases and nominal
voltage are the connector's own (``ChargeContext``): on a twin, 11 kW on a 3-phase connector and
on a 1-phase one are different currents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.limits.profiles import RateUnit

DEFAULT_MAX_PERIODS = 48
MIN_CURRENT_A = 6.0
DEFAULT_RANDOM_DELAY_MAX_S = 600.0
RANDOM_DELAY_CAP_S = 1800.0

# Units a command may carry; kW is accepted on input and stored as W.
_INPUT_UNITS: dict[str, tuple[RateUnit, float]] = {
    "A": (RateUnit.A, 1.0),
    "W": (RateUnit.W, 1.0),
    "kW": (RateUnit.W, 1000.0),
}


def parse_limit(value: float, unit: str | RateUnit) -> tuple[float, RateUnit] | None:
    """Normalise a (value, unit) pair from a command; None when the unit is not A, W or kW."""
    if isinstance(unit, RateUnit):
        return value, unit
    known = _INPUT_UNITS.get(unit)
    if known is None:
        return None
    return value * known[1], known[0]


@dataclass(frozen=True, slots=True)
class FailsafeConfig:
    """Limit that joins the minimum once the aggregator link has been down ``after_s``."""

    after_s: float
    limit: float
    unit: RateUnit


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Installation constants. ``supply_phases`` only serves to check a W fail-safe limit."""

    max_periods: int = DEFAULT_MAX_PERIODS
    max_profiles: int = 64
    min_current_a: float = MIN_CURRENT_A
    nominal_voltage_v: float = 230.0
    supply_phases: int = 1
    supported_units: frozenset[RateUnit] = frozenset({RateUnit.A, RateUnit.W})


@dataclass(frozen=True, slots=True)
class LinkState:
    """Aggregator link as the shell sees it; ``since`` is when it last changed (None: forever)."""

    online: bool = True
    since: float | None = None

    def down_since(self) -> float | None:
        """Start of the current outage (-inf when offline since ever), None when online."""
        if self.online:
            return None
        return float("-inf") if self.since is None else self.since


@dataclass(frozen=True, slots=True)
class LocalLimits:
    """Ceilings that never come from the aggregator, all in A per phase (None: no ceiling)."""

    hardware_a: float | None = None
    cable_a: float | None = None
    site_a: float | None = None


@dataclass(frozen=True, slots=True)
class ChargeContext:
    """Everything about the present the engine cannot know by itself (the shell fills it)."""

    voltages_v: tuple[float, ...] = ()
    phases_in_use: int = 1
    session_start: float | None = None
    link: LinkState = field(default_factory=LinkState)
    local: LocalLimits = field(default_factory=LocalLimits)
    # this connector's nominal phase voltage; None: the engine's (a twin's connectors may differ)
    nominal_voltage_v: float | None = None

    def volt_sum(self, nominal_v: float) -> float:
        """Sum of the phase voltages of the phases in use (nominal where unmeasured); the
        connector's own ``nominal_voltage_v`` wins over the engine-wide ``nominal_v``."""
        if self.nominal_voltage_v is not None:
            nominal_v = self.nominal_voltage_v
        phases = max(1, min(3, self.phases_in_use))
        total = 0.0
        for i in range(phases):
            measured = self.voltages_v[i] if i < len(self.voltages_v) else 0.0
            total += measured if measured >= nominal_v / 2 else nominal_v
        return total


def to_amps(value: float, unit: RateUnit, volt_sum: float) -> float:
    return value if unit is RateUnit.A else value / volt_sum


def from_amps(amps: float, unit: RateUnit, volt_sum: float) -> float:
    return amps if unit is RateUnit.A else amps * volt_sum
