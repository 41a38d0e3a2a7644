"""The composite over a stretch of time: where it may change, and the periods between.

Pure functions over installed profiles. The engine asks them for getComposite's
piecewise-constant schedule and for the control task's next wake-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from agent.limits.context import ChargeContext, FailsafeConfig, from_amps
from agent.limits.profiles import Installed, RateUnit
from agent.limits.results import CompositeLimit, CompositePeriod
from agent.limits.timeline import applies_to, boundaries


def breakpoints(entries: Sequence[Installed], failsafe: FailsafeConfig | None, t0: float,
                t1: float, connector: int, ctx: ChargeContext) -> list[float]:
    """Instants in ``(t0, t1)`` where the composite may change (a superset)."""
    points: set[float] = set()
    for e in entries:
        if applies_to(e, connector, ctx):
            points.update(boundaries(e, t0, t1, ctx))
    down = ctx.link.down_since()
    if failsafe is not None and down is not None:
        points.add(down + failsafe.after_s)
    return sorted(x for x in points if t0 < x < t1 and math.isfinite(x))


def periods(starts: Sequence[float], end: float, composite_at: Callable[[float], CompositeLimit],
            unit: RateUnit, volt_sum: float) -> list[CompositePeriod]:
    """The composite at each of ``starts`` up to ``end``, in ``unit``; neighbours with the
    same limit and source merged into one period."""
    out: list[CompositePeriod] = []
    for a, b in zip(starts, [*starts[1:], end], strict=True):
        c = composite_at(a)
        limit = None if c.limit_a is None else from_amps(c.limit_a, unit, volt_sum)
        prev = out[-1] if out else None
        if prev is not None and (prev.limit, prev.source, prev.profile_id) == (
            limit,
            c.source,
            c.profile_id,
        ):
            out[-1] = CompositePeriod(
                prev.start, b - prev.start, limit, c.source, c.profile_id, c.command_id
            )
        else:
            out.append(CompositePeriod(a, b - a, limit, c.source, c.profile_id, c.command_id))
    return out
