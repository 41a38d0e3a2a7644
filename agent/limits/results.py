"""Results the limits engine hands back to the shell (plain frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.limits.delay import PendingDelay
from agent.limits.profiles import ChargingProfile, Layer, Reason, Status


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """Outcome of installing a profile or a setLimit lease.

    ``superseded`` lists the profiles it replaced (the shell emits ``commandSuperseded`` for
    those with a ``source_command_id``); ``start_delay_s`` is the drawn randomizeStartS spread.
    """

    status: Status
    reason: Reason
    profile: ChargingProfile | None = None
    superseded: tuple[ChargingProfile, ...] = ()
    start_delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class CompositeLimit:
    """The ceiling at one instant; ``raw_a`` is before the pause rule, ``limit_a`` after."""

    limit_a: float | None
    below_minimum: bool
    source: str
    layer: Layer | None = None
    profile_id: str | None = None
    command_id: str | None = None
    raw_a: float | None = None
    dsr: bool = False


@dataclass(frozen=True, slots=True)
class CompositePeriod:
    """One piece of the piecewise-constant composite, ``limit`` in the requested unit."""

    start: float
    duration: float
    limit: float | None
    source: str
    profile_id: str | None = None
    command_id: str | None = None


@dataclass(frozen=True, slots=True)
class EffectiveLimit:
    """What to offer now: the composite after the randomised delay; ``drawn`` is a delay drawn
    by this very call (report it in commandStarted / the session record)."""

    limit_a: float | None
    paused: bool
    target: CompositeLimit
    pending: PendingDelay | None = None
    drawn: PendingDelay | None = None
