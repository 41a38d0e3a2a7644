"""Where one installed profile stands in time: the period covering an instant, and the instants
at which that can change. Pure functions; every interval is half-open ``[start, end)``.

Choices where the contract is silent:
- ``validFrom`` absent: valid from receipt (``installed_at``); ``validTo`` absent: no end.
- Absolute/recurring schedules start at ``schedule.startAt``, else at ``validFrom``; a drawn
  ``randomizeStartS`` spread shifts that start (and each recurrence) by the drawn amount.
- Recurring schedules repeat every 86 400 s / 604 800 s of UTC from their start and do not
  cover instants before it; a recurrence ends at ``durationS`` or at the next recurrence.
- Relative schedules start at the active session's start; with no session they cover nothing.
- Session-layer profiles belong to the session active when they were installed.
- ``maxOfflineS``: the profile is not valid while the link has been down that long (OCPP 2.1
  ``maxOfflineDuration``); it counts again after reconnection.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable

from agent.limits.context import ChargeContext
from agent.limits.profiles import RECURRENCE_S, Installed, Layer, Period, ProfileKind

INF = math.inf


def applies_to(entry: Installed, connector: int, ctx: ChargeContext) -> bool:
    """Whether the profile concerns this connector and, for the session layer, this session."""
    p = entry.profile
    if p.connector is not None and p.connector != connector:
        return False
    if p.layer is Layer.SESSION:
        return ctx.session_start is not None and entry.session_start == ctx.session_start
    return True


def validity(entry: Installed, ctx: ChargeContext) -> tuple[float, float]:
    p = entry.profile
    lo = p.valid_from if p.valid_from is not None else entry.installed_at
    hi = p.valid_to if p.valid_to is not None else INF
    down = ctx.link.down_since()
    if p.max_offline_s is not None and down is not None:
        hi = min(hi, down + p.max_offline_s)
    return lo, hi


def origin(entry: Installed, ctx: ChargeContext) -> float | None:
    """Start of the (first recurrence of the) schedule, None when it has none yet."""
    p = entry.profile
    if p.kind is ProfileKind.RELATIVE:
        if ctx.session_start is None:
            return None
        return ctx.session_start + entry.start_delay_s
    base = p.schedule.start_at if p.schedule.start_at is not None else p.valid_from
    if base is None:  # validation forbids it; treat as starting on receipt
        base = entry.installed_at
    return base + entry.start_delay_s


def _cycle(entry: Installed) -> float | None:
    r = entry.profile.recurrency
    return RECURRENCE_S[r] if entry.profile.kind is ProfileKind.RECURRING and r else None


def _span(entry: Installed) -> float:
    """Length of one run of the schedule (infinite when open-ended)."""
    d = entry.profile.schedule.duration_s
    cycle = _cycle(entry)
    if cycle is not None:
        return cycle if d is None else min(d, cycle)
    return INF if d is None else d


def _run_start(start: float, cycle: float | None, t: float) -> float | None:
    """Start of the run covering ``t`` (the latest recurrence not after t)."""
    if t < start:
        return None
    if cycle is None:
        return start
    k = math.floor((t - start) / cycle)
    run = start + k * cycle
    if run > t:  # float rounding
        run -= cycle
    elif run + cycle <= t:
        run += cycle
    return run


def period_at(entry: Installed, t: float, ctx: ChargeContext) -> Period | None:
    """The period of this profile covering instant ``t`` (None: the profile does not)."""
    lo, hi = validity(entry, ctx)
    if not lo <= t < hi:
        return None
    start = origin(entry, ctx)
    if start is None:
        return None
    run = _run_start(start, _cycle(entry), t)
    if run is None:
        return None
    rel = t - run
    if rel >= _span(entry):
        return None
    periods = entry.profile.schedule.periods
    idx = bisect_right([q.offset_s for q in periods], rel) - 1
    return periods[idx] if idx >= 0 else None


def boundaries(entry: Installed, t0: float, t1: float, ctx: ChargeContext) -> list[float]:
    """Instants in ``(t0, t1)`` where :func:`period_at` may change. With ``t1`` infinite a
    recurring profile is expanded two recurrences past ``t0``, enough for "the next one"."""
    lo, hi = validity(entry, ctx)
    points: list[float] = [lo, hi]
    start = origin(entry, ctx)
    if start is not None:
        points.extend(_schedule_points(entry, start, max(t0, lo), min(t1, hi)))
    return sorted({x for x in points if t0 < x < t1 and math.isfinite(x)})


def _schedule_points(entry: Installed, start: float, a: float, b: float) -> Iterable[float]:
    offsets = [q.offset_s for q in entry.profile.schedule.periods]
    span = _span(entry)
    cycle = _cycle(entry)
    if cycle is None:
        yield from (start + o for o in offsets)
        yield start + span
        return
    if b == INF:
        b = max(a, start) + 2 * cycle
    first = _run_start(start, cycle, max(a, start))
    run = start if first is None else first
    while run < b:
        yield from (run + o for o in offsets)
        yield run + span
        run += cycle


def finished(entry: Installed, t: float, ctx: ChargeContext) -> bool:
    """True when the profile can never cover ``t`` or any later instant again."""
    p = entry.profile
    if p.valid_to is not None and p.valid_to <= t:
        return True
    if p.kind is ProfileKind.ABSOLUTE and p.schedule.duration_s is not None:
        start = origin(entry, ctx)
        return start is not None and start + p.schedule.duration_s <= t
    return False
