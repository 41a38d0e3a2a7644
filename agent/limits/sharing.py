"""siteMax shared among a station's connectors (OCPP ChargingStationMaxProfile semantics).

Pure: no clock, no I/O. The caller passes, per connector, whether a vehicle is plugged in,
whether it asks for energy now (S2 closed: pilot state C/D), the connector's own ceiling (its
composite without siteMax) and the weight of one ampere in the budget's unit (1 for an A budget,
the connector's volt sum for a W budget), plus the state the previous call returned.

Rule (contract "siteMax on a station with several connectors"):

1. The sum over connectors of ``offer x weight`` never exceeds the budget; unplugged connectors
   count too (they get only what is left, so a plug-in never finds the budget already spent).
2. Each offer is either 0 (paused) or >= ``min_a`` (6 A): a share too small to charge is a pause.
3. Connectors that *want* energy share first, equally in the budget's unit (max-min fair: one
   capped by its own ceiling leaves the rest to the others). A connector wants energy when its
   vehicle is plugged in and it asks for energy, or has not asked yet since it was last offered
   (a GB/T vehicle closes S2 only once it sees PWM), or it was paused by this share.
4. When the equal share would fall below ``min_a``, the connector whose vehicle *arrived last*
   is paused first (first come, first served: a vehicle charging keeps charging, a newcomer
   waits), then the next latest, until every remaining share is >= ``min_a``.
5. What the wanting connectors leave goes to idle ones (a vehicle that stopped asking while it
   was offered: full or not wanting now), in arrival order, then to unplugged ones.
6. Reallocation at every call: a departure (unplug, or a vehicle that stops asking) frees its
   share for the others at once; a paused connector resumes as soon as a >= 6 A share exists.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Demand:
    """One connector as the share sees it; ``ceiling_a`` None means no ceiling of its own."""

    connector: int
    plugged: bool
    requesting: bool
    ceiling_a: float | None
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ShareState:
    """Memory between calls: arrival order, pauses by the share, vehicles seen asking."""

    order: tuple[int, ...] = ()
    held: frozenset[int] = frozenset()
    asked: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Shares:
    """Per connector the share of the budget in A (0: paused), and the next state."""

    offers_a: dict[int, float]
    held: frozenset[int]
    state: ShareState = field(default_factory=ShareState)


def _cap(d: Demand) -> float:
    return math.inf if d.ceiling_a is None else max(0.0, d.ceiling_a)


def _water_fill(budget: float, group: Sequence[Demand]) -> dict[int, float]:
    """Max-min fair split of ``budget`` (budget units) among ``group``; returns amperes."""
    out: dict[int, float] = {}
    left = max(0.0, budget)
    rest = sorted(group, key=lambda d: _cap(d) * d.weight)
    while rest:
        share = left / len(rest)
        d = rest[0]
        need = _cap(d) * d.weight
        if need <= share:
            out[d.connector] = _cap(d)
            left -= need
            rest.pop(0)
            continue
        for d in rest:
            out[d.connector] = share / d.weight
        break
    return out


def _fill_prefix(budget: float, ranked: Sequence[Demand], min_a: float
                 ) -> tuple[dict[int, float], list[int]]:
    """The longest prefix of ``ranked`` whose fair split gives everyone >= ``min_a``."""
    for k in range(len(ranked), 0, -1):
        split = _water_fill(budget, ranked[:k])
        if all(a >= min_a - _EPS for a in split.values()):
            return split, [d.connector for d in ranked[k:]]
    return {}, [d.connector for d in ranked]


def share_site(budget: float, demands: Iterable[Demand], state: ShareState,
               min_a: float) -> Shares:
    """Split ``budget`` (in the unit the weights convert to) among ``demands``."""
    by_id = {d.connector: d for d in demands}
    plugged = {c for c, d in by_id.items() if d.plugged}
    order = [c for c in state.order if c in plugged]
    order += sorted(plugged - set(order))
    # a connector whose own ceiling pauses it takes no part (and starts afresh afterwards)
    eligible = [c for c in order if _cap(by_id[c]) >= min_a]
    held_before = state.held & set(eligible)
    asked = (state.asked & set(eligible)) | {c for c in eligible if by_id[c].requesting}
    wanting = [by_id[c] for c in eligible
               if c in held_before or c not in asked or by_id[c].requesting]
    wanting_ids = {d.connector for d in wanting}
    idle = [by_id[c] for c in eligible if c not in wanting_ids]
    unplugged = sorted((d for d in by_id.values() if not d.plugged), key=lambda d: d.connector)

    offers = dict.fromkeys(by_id, 0.0)
    left = max(0.0, budget)
    held: list[int] = []
    for tier in (wanting, idle):
        split, paused = _fill_prefix(left, tier, min_a)
        offers.update(split)
        left -= sum(a * by_id[c].weight for c, a in split.items())
        if tier is wanting:
            held = paused
    for d in unplugged:  # what is left, never below the minimum
        a = min(_cap(d), max(0.0, left) / d.weight)
        if a >= min_a - _EPS:
            offers[d.connector] = a
            left -= a * d.weight
    new_held = frozenset(held)
    released = held_before - new_held
    new_state = ShareState(tuple(order), new_held, frozenset(asked - new_held - released))
    return Shares(offers, new_held, new_state)
