"""A station of several connectors: siteMax shared among them, then each one's composite.

``LimitsEngine.station`` calls this with its own evaluator; the share's rule is in
``sharing.py``. An A budget counts each connector's amperes; a W budget counts each at its own
volts (its phases and nominal voltage, measured when plausible).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.limits.composite import SiteShare, site_winner
from agent.limits.context import ChargeContext, EngineConfig
from agent.limits.profiles import Installed, RateUnit
from agent.limits.results import CompositeLimit
from agent.limits.sharing import Demand, ShareState, share_site


@dataclass(frozen=True, slots=True)
class StationInput:
    """One connector of a station: its context, a vehicle plugged in (no fault), and whether
    the vehicle asks for energy now (S2 closed: state 3/C or D)."""

    ctx: ChargeContext
    plugged: bool
    requesting: bool


class Evaluator(Protocol):
    def __call__(self, now: float, connector: int, ctx: ChargeContext, *,
                 site: SiteShare | None = None, without_site: bool = False) -> CompositeLimit: ...


def station_composites(evaluate: Evaluator, entries: Sequence[Installed], now: float,
                       inputs: Mapping[int, StationInput], state: ShareState,
                       config: EngineConfig) -> tuple[dict[int, CompositeLimit], ShareState]:
    site = site_winner(entries, now, next(iter(inputs.values())).ctx)
    if site is None:
        return {cid: evaluate(now, cid, i.ctx, site=SiteShare(None))
                for cid, i in inputs.items()}, state
    budget, entry = site
    per_amp_w = entry.profile.schedule.unit is RateUnit.W
    demands = []
    for cid, i in inputs.items():
        own = evaluate(now, cid, i.ctx, without_site=True)  # its ceiling without siteMax
        weight = i.ctx.volt_sum(config.nominal_voltage_v) if per_amp_w else 1.0
        demands.append(Demand(cid, i.plugged, i.requesting, own.limit_a, weight))
    shares = share_site(budget, demands, state, config.min_current_a)
    return {cid: evaluate(now, cid, i.ctx, site=SiteShare(shares.offers_a[cid], entry))
            for cid, i in inputs.items()}, shares.state
