"""Property tests: the composite against a simple reference, the schedule against point values,
and the randomised delay's invariants. Times are whole seconds so float rounding plays no part."""

from __future__ import annotations

import math
import random
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.limits import (
    ChargeContext,
    ChargingProfile,
    FailsafeConfig,
    Installed,
    Layer,
    LimitsEngine,
    LinkState,
    LocalLimits,
    Period,
    ProfileKind,
    RateUnit,
    Recurrency,
    Schedule,
    Status,
)

T0 = 1_795_651_200
DAY = 86_400
CYCLE = {Recurrency.DAILY: 86_400, Recurrency.WEEKLY: 604_800}


@st.composite
def profiles(draw: st.DrawFn, idx: int) -> ChargingProfile:
    kind = draw(st.sampled_from(ProfileKind))
    layer = draw(st.sampled_from(Layer))
    if layer is Layer.SITE_MAX and kind is ProfileKind.RELATIVE:
        kind = ProfileKind.ABSOLUTE
    unit = draw(st.sampled_from(RateUnit))
    n = draw(st.integers(1, 4))
    offsets = sorted(draw(st.sets(st.integers(1, 20 * 3600), min_size=n - 1, max_size=n - 1)))
    scale = 1 if unit is RateUnit.A else 230
    limits = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))
    periods = tuple(Period(o, v * scale) for o, v in zip([0, *offsets], limits, strict=True))
    rec = draw(st.sampled_from(Recurrency)) if kind is ProfileKind.RECURRING else None
    start = None if kind is ProfileKind.RELATIVE else T0 + draw(st.integers(-DAY, DAY))
    duration = draw(st.none() | st.integers(60, DAY))
    valid_from = draw(st.none() | st.integers(T0 - DAY, T0 + 2 * DAY))
    valid_to = draw(st.none() | st.integers(1, 3 * DAY))
    return ChargingProfile(
        profile_id=f"p{idx}",
        layer=layer,
        stack_level=draw(st.integers(0, 3)),
        kind=kind,
        schedule=Schedule(unit, periods, start, duration),
        recurrency=rec,
        valid_from=valid_from,
        valid_to=None if valid_to is None else (valid_from or T0) + valid_to,
        max_offline_s=draw(st.none() | st.integers(0, 7200)),
        # siteMax is the station's: never addressed to one connector
        connector=None if layer is Layer.SITE_MAX else draw(st.sampled_from([None, 1, 2])),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[LimitsEngine, ChargeContext]:
    fs = draw(
        st.none()
        | st.builds(FailsafeConfig, st.integers(0, 7200), st.integers(6, 32), st.just(RateUnit.A))
    )
    engine = LimitsEngine(random.Random(0).uniform, random_delay_max_s=0, failsafe=fs)
    session = draw(st.none() | st.integers(T0 - DAY, T0 + DAY))
    for i in range(draw(st.integers(0, 6))):
        p = draw(profiles(i))
        at = T0 - 2 * DAY if p.valid_from is not None else T0 + draw(st.integers(-DAY, DAY))
        bind = session if p.layer is Layer.SESSION else None
        if bind is None and p.layer is Layer.SESSION:
            bind = T0 + draw(st.integers(-DAY, DAY))  # a profile of some other session
        assert engine.apply_profile(p, at, session_start=bind).status is Status.ACCEPTED
    online = draw(st.booleans())
    ctx = ChargeContext(
        voltages_v=(230.0, 230.0, 230.0),
        phases_in_use=draw(st.integers(1, 3)),
        session_start=session,
        link=LinkState(online, None if online else T0 + draw(st.integers(-DAY, DAY))),
        local=LocalLimits(*[draw(st.none() | st.integers(6, 40)) for _ in range(3)]),
    )
    return engine, ctx


def ref_limit(e: Installed, t: float, ctx: ChargeContext) -> float | None:
    """Straight from the rules: the covering period's limit in A, or None."""
    p, s = e.profile, e.profile.schedule
    lo = e.installed_at if p.valid_from is None else p.valid_from
    hi = math.inf if p.valid_to is None else p.valid_to
    if not ctx.link.online and p.max_offline_s is not None and ctx.link.since is not None:
        hi = min(hi, ctx.link.since + p.max_offline_s)
    if not lo <= t < hi:
        return None
    if p.kind is ProfileKind.RELATIVE:
        if ctx.session_start is None:
            return None
        start: float = ctx.session_start
    else:
        anchor = s.start_at if s.start_at is not None else p.valid_from
        assert anchor is not None
        start = anchor
    if t < start:
        return None
    rel = t - start
    end = math.inf if s.duration_s is None else s.duration_s
    if p.recurrency is not None:
        rel %= CYCLE[p.recurrency]
        end = min(end, CYCLE[p.recurrency])
    if rel >= end:
        return None
    value = [q.limit for q in s.periods if q.offset_s <= rel][-1]
    return value if s.unit is RateUnit.A else value / (230.0 * ctx.phases_in_use)


def ref_layers(engine: LimitsEngine, t: float, ctx: ChargeContext) -> dict[Layer, float]:
    winners: dict[Layer, tuple[tuple[int, int], float]] = {}
    for e in engine.installed:
        p = e.profile
        if p.connector not in (None, 1):
            continue
        if p.layer is Layer.SESSION and (
            ctx.session_start is None or e.session_start != ctx.session_start
        ):
            continue
        value = ref_limit(e, t, ctx)
        # grid: the lower of equal priorities; other layers: the more specific one
        rank = (p.stack_level, int(p.connector is not None and p.layer is not Layer.GRID))
        if value is None:
            continue
        if p.layer not in winners or rank > winners[p.layer][0] or (
                rank == winners[p.layer][0] and value < winners[p.layer][1]):
            winners[p.layer] = (rank, value)
    return {layer: v for layer, (_, v) in winners.items()}


def ref_terms(engine: LimitsEngine, t: float, ctx: ChargeContext) -> list[float]:
    layers = ref_layers(engine, t, ctx)
    if Layer.SESSION in layers:
        layers.pop(Layer.DEFAULT, None)
    terms = list(layers.values())
    fs = engine.failsafe
    since = ctx.link.since
    if fs is not None and not ctx.link.online and since is not None and t >= since + fs.after_s:
        terms.append(fs.limit)
    terms += [x for x in (ctx.local.hardware_a, ctx.local.cable_a, ctx.local.site_a) if x]
    return terms


instants = st.integers(T0 - DAY, T0 + 3 * DAY)


@settings(max_examples=300, deadline=None)
@given(scenarios(), instants)
def test_composite_equals_reference_minimum(
    scenario: tuple[LimitsEngine, ChargeContext], t: int
) -> None:
    engine, ctx = scenario
    c = engine.composite(t, 1, ctx)
    terms = ref_terms(engine, t, ctx)
    if not terms:
        assert c.limit_a is None and c.raw_a is None
        return
    assert c.raw_a is not None and math.isclose(c.raw_a, min(terms))
    assert c.below_minimum == (min(terms) < 6)
    assert c.limit_a == (0.0 if c.below_minimum else c.raw_a)


@settings(max_examples=200, deadline=None)
@given(scenarios(), instants)
def test_composite_never_above_any_layer_or_local_limit(
    scenario: tuple[LimitsEngine, ChargeContext], t: int
) -> None:
    engine, ctx = scenario
    c = engine.composite(t, 1, ctx)
    layers = ref_layers(engine, t, ctx)
    ceilings = [layers.get(Layer.SITE_MAX), layers.get(Layer.GRID)]
    ceilings += [ctx.local.hardware_a, ctx.local.cable_a, ctx.local.site_a]
    for ceiling in ceilings:
        if ceiling is not None:
            assert c.limit_a is not None and c.limit_a <= ceiling + 1e-9


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(T0 - DAY, T0 + DAY), st.data())
def test_schedule_agrees_with_point_evaluation(
    scenario: tuple[LimitsEngine, ChargeContext], now: int, data: st.DataObject
) -> None:
    engine, ctx = scenario
    horizon = 2 * DAY
    periods = engine.composite_schedule(now, horizon, RateUnit.A, 1, ctx)
    assert periods[0].start == now
    assert math.isclose(sum(p.duration for p in periods), horizon)
    for a, b in pairwise(periods):
        assert math.isclose(a.start + a.duration, b.start)
    for _ in range(10):
        t = data.draw(st.integers(now, now + horizon - 1))
        (seg,) = [p for p in periods if p.start <= t < p.start + p.duration]
        c = engine.composite(t, 1, ctx)
        assert (c.limit_a, c.source, c.profile_id) == (seg.limit, seg.source, seg.profile_id)


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(T0 - DAY, T0 + DAY), st.data())
def test_composite_constant_until_next_change(
    scenario: tuple[LimitsEngine, ChargeContext], now: int, data: st.DataObject
) -> None:
    engine, ctx = scenario
    nxt = engine.next_change_after(now, 1, ctx)
    assert nxt is None or nxt > now
    end = now + 3 * DAY if nxt is None else nxt
    base = engine.composite(now, 1, ctx)
    t = data.draw(st.floats(now, end, exclude_max=True))
    assert engine.composite(t, 1, ctx) == base


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 2**32),
    st.integers(0, 1800),
    st.lists(st.tuples(st.integers(1, 900), st.integers(-1, 32), st.booleans()), max_size=25),
)
def test_offered_never_above_target_and_one_draw_per_event(
    seed: int, max_s: int, steps: list[tuple[int, int, bool]]
) -> None:
    rng = random.Random(seed)
    calls: list[float] = []

    def uniform(a: float, b: float) -> float:
        calls.append(value := rng.uniform(a, b))
        return value

    engine = LimitsEngine(uniform, random_delay_max_s=max_s)
    ctx = ChargeContext(session_start=T0)
    now = T0
    drawn = 0
    for i, (dt, limit, dsr) in enumerate(steps):
        if limit >= 0:
            engine.set_limit(f"c{i}", limit, "A", 3600, now, dsr=dsr)
        eff = engine.effective_limit(now, 1, ctx)
        target = eff.target.limit_a
        assert target is None or (eff.limit_a is not None and eff.limit_a <= target)
        if eff.drawn is not None:
            drawn += 1
            assert 0 <= eff.drawn.drawn_s <= max_s
        now += dt
    assert len(calls) == drawn
