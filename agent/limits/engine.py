"""The limits engine: installed profiles and local limits in, the limit to offer out.

Pure and deterministic: the caller passes the time (float epoch seconds UTC), the context
(voltages, phases, session, link, local ceilings) and, once, a uniform random source.

Composite rule, per instant and connector (contract "Composite limit"):

| term          | value                                                                      |
|---------------|----------------------------------------------------------------------------|
| siteMax       | winner of layer siteMax                                                    |
| grid          | winner of layer grid (setLimit curtailments live here)                     |
| session/default | winner of layer session for the active session, else winner of default   |
| failsafe      | fail-safe limit, once the link has been down ``failsafe.after_s``          |
| local:site/cable/hardware | installer site limit, cable rating, hardware rating            |

A layer's winner is the valid profile with the highest stackLevel that has a period covering the
instant. At the same stackLevel a connector-specific and an all-connector profile (one sent to
the device without ``connector`` or to a group) combine as follows:
- grid layer (setLimit leases and grid profiles: curtailments): the lower one wins. Both are
  constraints of some part of the network (a feeder for the group, one circuit for the
  connector) that nobody may exceed; lifting one for a connector takes an explicit higher
  ``priority`` (stackLevel), never the accident of equal priorities.
- default and session layers (charging plans): the connector-specific one wins, as OCPP's EVSE
  profile over its station-wide one.

siteMax is the station's (OCPP ChargingStationMaxProfile): on several connectors
:meth:`LimitsEngine.station` shares it (``sharing.py``) and each connector's share stands for
the siteMax term, so the sum of the offers never exceeds it. The result is
the minimum of the terms (ties go to the earlier row); below ``min_current_a`` it is a pause
(``limit_a`` 0, ``below_minimum``), and None means nothing constrains the connector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from agent.errors import ConfigError
from agent.limits.composite import SiteShare, evaluate, failsafe_active
from agent.limits.context import (
    RANDOM_DELAY_CAP_S,
    ChargeContext,
    EngineConfig,
    FailsafeConfig,
    parse_limit,
    to_amps,
)
from agent.limits.delay import DelayGate, PendingDelay, Uniform, draw, start_delays
from agent.limits.horizon import breakpoints, periods
from agent.limits.profiles import (
    ChargingProfile,
    Installed,
    Layer,
    Period,
    ProfileKind,
    RateUnit,
    Reason,
    Schedule,
    Status,
    installed_from_dict,
    installed_to_dict,
)
from agent.limits.results import ApplyResult, CompositeLimit, CompositePeriod, EffectiveLimit
from agent.limits.sharing import ShareState
from agent.limits.station import StationInput, station_composites
from agent.limits.timeline import finished
from agent.limits.validation import requires_discharge, validate_profile

STATE_VERSION = 1
SET_LIMIT_PREFIX = "cmd:"


class LimitsEngine:
    """Holds profiles, fail-safe and random-delay settings, and one delay gate per connector."""

    def __init__(
        self,
        uniform: Uniform,
        config: EngineConfig | None = None,
        *,
        random_delay_max_s: float = 600.0,
        failsafe: FailsafeConfig | None = None,
    ) -> None:
        self._uniform = uniform
        self._config = config or EngineConfig()
        self._entries: list[Installed] = []
        self._gates: dict[int, DelayGate] = {}
        self._share = ShareState()
        self._failsafe: FailsafeConfig | None = None
        self._random_delay_max_s = 0.0
        if self.configure_random_delay(random_delay_max_s) is not Reason.OK:
            raise ConfigError("random delay out of range", key="randomDelayMaxS", fix="0..1800")
        if failsafe is not None and self._set_failsafe(failsafe) is not Reason.OK:
            raise ConfigError("fail-safe below minimum current", key="failsafe", fix=">= 6 A")

    # ------------------------------------------------------------------ settings

    @property
    def config(self) -> EngineConfig:
        return self._config

    @property
    def failsafe(self) -> FailsafeConfig | None:
        return self._failsafe

    @property
    def random_delay_max_s(self) -> float:
        return self._random_delay_max_s

    def configure_random_delay(self, max_s: float) -> Reason:
        if not (math.isfinite(max_s) and 0 <= max_s <= RANDOM_DELAY_CAP_S):
            return Reason.LOCAL_CONSTRAINT
        self._random_delay_max_s = float(max_s)
        return Reason.OK

    def configure_failsafe(self, after_s: float, value: float, unit: str | RateUnit) -> Reason:
        """Refuses (LOCAL_CONSTRAINT) a fail-safe that would not let a car charge: a W limit is
        checked at nominal voltage on ``config.supply_phases``."""
        parsed = parse_limit(value, unit)
        if parsed is None:
            return Reason.UNIT_UNSUPPORTED
        return self._set_failsafe(FailsafeConfig(after_s, parsed[0], parsed[1]))

    def _set_failsafe(self, cfg: FailsafeConfig) -> Reason:
        if not (math.isfinite(cfg.after_s) and cfg.after_s >= 0 and math.isfinite(cfg.limit)):
            return Reason.LOCAL_CONSTRAINT
        c = self._config
        if to_amps(cfg.limit, cfg.unit, c.nominal_voltage_v * c.supply_phases) < c.min_current_a:
            return Reason.LOCAL_CONSTRAINT
        self._failsafe = cfg
        return Reason.OK

    def disable_failsafe(self) -> None:
        self._failsafe = None

    # ------------------------------------------------------------------ profiles

    @property
    def installed(self) -> tuple[Installed, ...]:
        return tuple(self._entries)

    @property
    def profiles(self) -> tuple[ChargingProfile, ...]:
        return tuple(e.profile for e in self._entries)

    def apply_profile(
        self, profile: ChargingProfile, now: float, *, session_start: float | None = None
    ) -> ApplyResult:
        """Install ``profile``; the same profileId, or the same layer+stackLevel+connector,
        replaces what was there. ``session_start`` binds a session-layer profile."""
        if requires_discharge(profile):
            return ApplyResult(Status.NOT_SUPPORTED, Reason.LOCAL_CONSTRAINT)
        c = self._config
        reason = validate_profile(
            profile, max_periods=c.max_periods, supported_units=c.supported_units
        )
        if reason is not Reason.OK:
            return ApplyResult(Status.REJECTED, reason)
        if profile.layer is Layer.SESSION and session_start is None:
            return ApplyResult(Status.REJECTED, Reason.NO_ACTIVE_SESSION)
        old = [e for e in self._entries if _replaces(profile, e.profile)]
        if len(self._entries) - len(old) >= c.max_profiles:
            return ApplyResult(Status.REJECTED, Reason.LOCAL_CONSTRAINT)
        spread = draw(self._uniform, profile.schedule.randomize_start_s or 0.0)
        bound = session_start if profile.layer is Layer.SESSION else None
        self._entries = [e for e in self._entries if e not in old]
        self._entries.append(Installed(profile, now, bound, spread))
        superseded = tuple(e.profile for e in old)
        return ApplyResult(Status.ACCEPTED, Reason.OK, profile, superseded, spread)

    def set_limit(
        self,
        command_id: str,
        value: float,
        unit: str | RateUnit,
        duration_s: float,
        now: float,
        *,
        start_at: float | None = None,
        priority: int = 0,
        dsr: bool = False,
        randomize_start_s: float | None = None,
        connector: int | None = None,
    ) -> ApplyResult:
        """A setLimit lease: a grid-layer profile at stackLevel ``priority`` from ``start_at``
        (or now) for ``duration_s``, lapsing by itself; a drawn randomizeStartS shifts the
        whole lease. kW is stored as W."""
        parsed = parse_limit(value, unit)
        if parsed is None:
            return ApplyResult(Status.REJECTED, Reason.UNIT_UNSUPPORTED)
        if not (math.isfinite(duration_s) and duration_s > 0):
            return ApplyResult(Status.REJECTED, Reason.INVALID_SCHEDULE)
        start = now if start_at is None else start_at
        spread = randomize_start_s or 0.0
        profile = ChargingProfile(
            profile_id=SET_LIMIT_PREFIX + command_id,
            layer=Layer.GRID,
            stack_level=priority,
            kind=ProfileKind.ABSOLUTE,
            schedule=Schedule(
                unit=parsed[1],
                periods=(Period(0.0, parsed[0]),),
                start_at=start,
                duration_s=duration_s,
                randomize_start_s=randomize_start_s,
            ),
            valid_from=start,
            valid_to=start + spread + duration_s,
            connector=connector,
            source_command_id=command_id,
            dsr=dsr,
            commanded_kw=unit == "kW",
        )
        return self.apply_profile(profile, now)

    def clear(
        self,
        profile_id: str | None = None,
        layer: Layer | None = None,
        stack_level: int | None = None,
    ) -> list[ChargingProfile]:
        """Remove matching profiles (no filter: all); an empty list means reply ``unknown``."""
        hit = [
            e
            for e in self._entries
            if (profile_id is None or e.profile.profile_id == profile_id)
            and (layer is None or e.profile.layer is layer)
            and (stack_level is None or e.profile.stack_level == stack_level)
        ]
        return self._remove(hit)

    def end_session(self) -> list[ChargingProfile]:
        """Session-layer profiles die with their session (OCPP: TxProfile deleted at the end)."""
        return self._remove([e for e in self._entries if e.profile.layer is Layer.SESSION])

    def purge_expired(self, now: float) -> list[ChargingProfile]:
        """Drop profiles that can never apply again (leases lapsed, validTo passed)."""
        ctx = ChargeContext()
        return self._remove([e for e in self._entries if finished(e, now, ctx)])

    def _remove(self, hit: list[Installed]) -> list[ChargingProfile]:
        self._entries = [e for e in self._entries if e not in hit]
        return [e.profile for e in hit]

    # ------------------------------------------------------------------ evaluation

    def failsafe_active(self, now: float, ctx: ChargeContext) -> bool:
        return failsafe_active(self._failsafe, now, ctx)

    def composite(self, now: float, connector: int, ctx: ChargeContext) -> CompositeLimit:
        """The ceiling at ``now`` as if the connector were alone (siteMax whole; the rule table
        is in this module's docstring)."""
        return self._evaluate(now, connector, ctx)

    def station(self, now: float, inputs: Mapping[int, StationInput]
                ) -> dict[int, CompositeLimit]:
        """Every connector's composite, siteMax shared among them (``station.py``): the sum of
        the offers never exceeds it. One connector: exactly :meth:`composite`."""
        if len(inputs) <= 1:
            return {cid: self.composite(now, cid, i.ctx) for cid, i in inputs.items()}
        out, self._share = station_composites(self._evaluate, self._entries, now, inputs,
                                              self._share, self._config)
        return out

    def _evaluate(self, now: float, connector: int, ctx: ChargeContext, *,
                  site: SiteShare | None = None, without_site: bool = False) -> CompositeLimit:
        return evaluate(self._entries, now, connector, ctx, failsafe=self._failsafe,
                        min_current_a=self._config.min_current_a,
                        nominal_voltage_v=self._config.nominal_voltage_v,
                        site=site, without_site=without_site)

    def breakpoints(self, t0: float, t1: float, connector: int, ctx: ChargeContext) -> list[float]:
        """Instants in ``(t0, t1)`` where the composite may change (a superset)."""
        return breakpoints(self._entries, self._failsafe, t0, t1, connector, ctx)

    def composite_schedule(
        self,
        now: float,
        horizon_s: float,
        unit: RateUnit,
        connector: int,
        ctx: ChargeContext,
    ) -> list[CompositePeriod]:
        """The piecewise-constant composite over ``[now, now + horizon_s)`` (getComposite),
        assuming the context (link, session, voltages) stays as it is."""
        if not horizon_s > 0:
            return []
        end = now + horizon_s
        starts = [now, *self.breakpoints(now, end, connector, ctx)]
        vs = ctx.volt_sum(self._config.nominal_voltage_v)
        return periods(starts, end, lambda t: self.composite(t, connector, ctx), unit, vs)

    def effective_limit(self, now: float, connector: int, ctx: ChargeContext,
                        target: CompositeLimit | None = None) -> EffectiveLimit:
        """The composite (or ``target``, e.g. from :meth:`station`) after the randomised delay
        (see ``delay.py``); call with non-decreasing ``now``, at least at every
        :meth:`next_change_after`."""
        if target is None:
            target = self.composite(now, connector, ctx)
        gate = self._gates.setdefault(connector, DelayGate(connector))
        drawn = gate.step(
            now,
            target.limit_a,
            session=ctx.session_start is not None,
            dsr=target.dsr,
            paused_below=self._config.min_current_a,
            max_s=self._random_delay_max_s,
            uniform=self._uniform,
            source=target.source,
            profile_id=target.profile_id,
            command_id=target.command_id,
        )
        offered = gate.offered
        paused = offered is not None and offered < self._config.min_current_a
        return EffectiveLimit(offered, paused, target, gate.pending, drawn)

    def pending_delays(self, now: float, ctx: ChargeContext | None = None) -> list[PendingDelay]:
        """Delays drawn and not yet over: held increases and randomizeStartS spreads."""
        held = [g.pending for g in self._gates.values() if g.pending is not None]
        return held + start_delays(self._entries, now, ctx or ChargeContext())

    def next_change_after(self, now: float, connector: int, ctx: ChargeContext) -> float | None:
        """Earliest instant after ``now`` at which the offered limit may change (None: never,
        unless an input changes). The shell sleeps until then or until a new input."""
        points = self.breakpoints(now, math.inf, connector, ctx)
        gate = self._gates.get(connector)
        if gate is not None and gate.pending is not None and gate.pending.until > now:
            points.append(gate.pending.until)
        return min(points) if points else None

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible state; delay gates are not kept (a restart is a new charge start)."""
        fs = self._failsafe
        return {
            "version": STATE_VERSION,
            "randomDelayMaxS": self._random_delay_max_s,
            "failsafe": None
            if fs is None
            else {"afterS": fs.after_s, "limit": fs.limit, "unit": fs.unit.value},
            "profiles": [installed_to_dict(e) for e in self._entries],
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], uniform: Uniform, config: EngineConfig | None = None
    ) -> LimitsEngine:
        if data.get("version") != STATE_VERSION:
            raise ConfigError("unknown limits state version", key="version")
        fs = data.get("failsafe")
        engine = cls(
            uniform,
            config,
            random_delay_max_s=float(data["randomDelayMaxS"]),
            failsafe=None
            if fs is None
            else FailsafeConfig(float(fs["afterS"]), float(fs["limit"]), RateUnit(fs["unit"])),
        )
        engine._entries = [installed_from_dict(d) for d in data["profiles"]]
        return engine


def _replaces(new: ChargingProfile, old: ChargingProfile) -> bool:
    if new.profile_id == old.profile_id:
        return True
    return (new.layer, new.stack_level, new.connector) == (
        old.layer,
        old.stack_level,
        old.connector,
    )
