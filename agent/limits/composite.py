"""The composite at one instant: per-layer winners, fail-safe and local ceilings, minimum.

Pure functions over installed profiles; the rule table is in ``engine.py``'s docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.limits.context import ChargeContext, FailsafeConfig, to_amps
from agent.limits.profiles import Installed, Layer
from agent.limits.results import CompositeLimit
from agent.limits.timeline import applies_to, period_at


@dataclass(frozen=True, slots=True)
class _Term:
    amps: float
    source: str
    entry: Installed | None = None


def failsafe_active(failsafe: FailsafeConfig | None, t: float, ctx: ChargeContext) -> bool:
    down = ctx.link.down_since()
    return failsafe is not None and down is not None and t >= down + failsafe.after_s


@dataclass(frozen=True, slots=True)
class SiteShare:
    """On a station of several connectors, this connector's share of siteMax (``sharing.py``)
    replaces the siteMax layer's winner; ``amps`` None: no siteMax in force."""

    amps: float | None
    entry: Installed | None = None


def site_winner(entries: Sequence[Installed], t: float, ctx: ChargeContext
                ) -> tuple[float, Installed] | None:
    """The station's siteMax at ``t``: (limit in the profile's unit, its entry), or None."""
    best: tuple[int, float, Installed] | None = None
    for e in entries:
        p = e.profile
        if p.layer is not Layer.SITE_MAX or p.connector is not None:
            continue
        period = period_at(e, t, ctx)
        if period is not None and (best is None or p.stack_level > best[0]):
            best = (p.stack_level, period.limit, e)
    return None if best is None else (best[1], best[2])


def evaluate(
    entries: Sequence[Installed],
    t: float,
    connector: int,
    ctx: ChargeContext,
    *,
    failsafe: FailsafeConfig | None,
    min_current_a: float,
    nominal_voltage_v: float,
    site: SiteShare | None = None,
    without_site: bool = False,
) -> CompositeLimit:
    """``site`` given: it stands for the siteMax layer; ``without_site``: no siteMax term (the
    connector's own ceiling, from which its share is computed)."""
    vs = ctx.volt_sum(nominal_voltage_v)
    terms: list[_Term] = []
    if site is not None:
        if site.amps is not None:
            terms.append(_Term(site.amps, Layer.SITE_MAX.value, site.entry))
    elif not without_site:
        terms.extend(_winner(entries, Layer.SITE_MAX, t, connector, ctx, vs))
    terms.extend(_winner(entries, Layer.GRID, t, connector, ctx, vs))
    session = _winner(entries, Layer.SESSION, t, connector, ctx, vs)
    terms.extend(session or _winner(entries, Layer.DEFAULT, t, connector, ctx, vs))
    if failsafe is not None and failsafe_active(failsafe, t, ctx):
        # The fail-safe never pauses by itself, whatever the voltage does to a W limit.
        amps = max(min_current_a, to_amps(failsafe.limit, failsafe.unit, vs))
        terms.append(_Term(amps, "failsafe"))
    local = ctx.local
    for name, value in (
        ("site", local.site_a),
        ("cable", local.cable_a),
        ("hardware", local.hardware_a),
    ):
        if value is not None:
            terms.append(_Term(value, "local:" + name))
    return _lowest(terms, min_current_a)


def _winner(
    entries: Sequence[Installed],
    layer: Layer,
    t: float,
    connector: int,
    ctx: ChargeContext,
    vs: float,
) -> list[_Term]:
    best: tuple[int, int] | None = None
    found: list[_Term] = []
    for e in entries:
        p = e.profile
        if p.layer is not layer or not applies_to(e, connector, ctx):
            continue
        period = period_at(e, t, ctx)
        if period is None:
            continue
        # grid (curtailments): at equal stackLevel the lower of a connector's and an
        # all-connector (device or group) one wins; other layers: the more specific one wins
        specific = 0 if p.connector is None or layer is Layer.GRID else 1
        rank = (p.stack_level, specific)
        term = _Term(to_amps(period.limit, p.schedule.unit, vs), layer.value, e)
        if best is None or rank > best:
            best = rank
            found = [term]
        elif rank == best and term.amps < found[0].amps:
            found = [term]
    return found


def _lowest(terms: list[_Term], min_current_a: float) -> CompositeLimit:
    if not terms:
        return CompositeLimit(None, False, "none")
    low = terms[0]
    for term in terms[1:]:
        if term.amps < low.amps:
            low = term
    below = low.amps < min_current_a
    p = low.entry.profile if low.entry is not None else None
    return CompositeLimit(
        limit_a=0.0 if below else low.amps,
        below_minimum=below,
        source=low.source,
        layer=None if p is None else p.layer,
        profile_id=None if p is None else p.profile_id,
        command_id=None if p is None else p.source_command_id,
        raw_a=low.amps,
        dsr=False if p is None else p.dsr,
    )
