"""OCPP smart-charging examples for the limits engine's composite (no I/O, time is an input)."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from agent.errors import ConfigError
from agent.limits import (
    ChargeContext,
    ChargingProfile,
    EngineConfig,
    FailsafeConfig,
    Layer,
    LimitsEngine,
    LinkState,
    LocalLimits,
    Period,
    ProfileKind,
    RateUnit,
    Reason,
    Recurrency,
    Schedule,
    Status,
)

T0 = 1_795_651_200.0  # 2026-11-26T00:00:00Z, a Thursday
H = 3600.0
DAY = 86_400.0
CTX = ChargeContext(voltages_v=(230.0,), phases_in_use=1)


def prof(
    pid: str,
    layer: Layer = Layer.DEFAULT,
    level: int = 0,
    periods: tuple[tuple[float, float], ...] = ((0, 16),),
    *,
    kind: ProfileKind = ProfileKind.ABSOLUTE,
    unit: RateUnit = RateUnit.A,
    start: float | None = T0,
    duration: float | None = None,
    rec: Recurrency | None = None,
    valid_from: float | None = None,
    valid_to: float | None = None,
    max_offline: float | None = None,
    connector: int | None = None,
) -> ChargingProfile:
    return ChargingProfile(
        profile_id=pid,
        layer=layer,
        stack_level=level,
        kind=kind,
        schedule=Schedule(unit, tuple(Period(o, v) for o, v in periods), start, duration),
        recurrency=rec,
        valid_from=valid_from,
        valid_to=valid_to,
        max_offline_s=max_offline,
        connector=connector,
    )


def make(*profiles: ChargingProfile, session_start: float | None = None) -> LimitsEngine:
    engine = LimitsEngine(random.Random(7).uniform, random_delay_max_s=0)
    for p in profiles:
        result = engine.apply_profile(p, T0 - H, session_start=session_start)
        assert result.status is Status.ACCEPTED, (p.profile_id, result.reason)
    return engine


BASE = prof("base", level=0, periods=((0, 16),))
IN_SESSION = replace(CTX, session_start=T0 + 5 * H)
NIGHT = prof(
    "night",
    level=1,
    periods=((0, 8),),
    kind=ProfileKind.RECURRING,
    rec=Recurrency.DAILY,
    start=T0 + 22 * H,
    duration=8 * H,
)
THURSDAY = prof(
    "thu",
    level=1,
    periods=((0, 10),),
    kind=ProfileKind.RECURRING,
    rec=Recurrency.WEEKLY,
    duration=DAY,
)
RELATIVE = prof("rel", level=1, periods=((0, 10), (H, 20)), kind=ProfileKind.RELATIVE, start=None)

# (name, profiles, instant, context, expected limit_a, expected source, expected profile id)
# fmt: off
CASES: list[tuple[str, tuple[ChargingProfile, ...], float, ChargeContext, float, str, str]] = [
    ("higher stack level wins", (BASE, prof("hi", level=1, periods=((0, 10),))), T0 + H, CTX,
     10, "default", "hi"),
    ("higher level without period shows lower", (BASE, prof("hi", level=1, duration=H)),
     T0 + 2 * H, CTX, 16, "default", "base"),
    ("validFrom in the future: not yet", (BASE, prof("f", level=1, periods=((0, 8),),
     valid_from=T0 + 5 * H, start=None)), T0 + H, CTX, 16, "default", "base"),
    ("validFrom in the future: reached", (BASE, prof("f", level=1, periods=((0, 8),),
     valid_from=T0 + 5 * H, start=None)), T0 + 6 * H, CTX, 8, "default", "f"),
    ("validTo lapses", (BASE, prof("t", level=1, periods=((0, 8),), valid_to=T0 + 2 * H)),
     T0 + 3 * H, CTX, 16, "default", "base"),
    ("daily: before its first start", (BASE, NIGHT), T0 + 2 * H, CTX, 16, "default", "base"),
    ("daily: after midnight", (BASE, NIGHT), T0 + DAY + H, CTX, 8, "default", "night"),
    ("daily: at 23:00 day 3", (BASE, NIGHT), T0 + 2 * DAY + 23 * H, CTX, 8, "default", "night"),
    ("daily: 07:00 is over", (BASE, NIGHT), T0 + DAY + 7 * H, CTX, 16, "default", "base"),
    ("daily: end is exclusive", (BASE, NIGHT), T0 + DAY + 6 * H, CTX, 16, "default", "base"),
    ("weekly: next Thursday", (BASE, THURSDAY), T0 + 7 * DAY + 12 * H, CTX, 10, "default",
     "thu"),
    ("weekly: Friday", (BASE, THURSDAY), T0 + 8 * DAY + 12 * H, CTX, 16, "default", "base"),
    ("relative: first period", (BASE, RELATIVE), T0 + 5.5 * H, IN_SESSION, 10, "default",
     "rel"),
    ("relative: second period", (BASE, RELATIVE), T0 + 6.5 * H, IN_SESSION, 20, "default",
     "rel"),
    ("relative: no session", (BASE, RELATIVE), T0 + 6.5 * H, CTX, 16, "default", "base"),
    ("siteMax caps", (BASE, prof("site", Layer.SITE_MAX, periods=((0, 12),))), T0, CTX, 12,
     "siteMax", "site"),
    ("grid below default", (BASE, prof("g", Layer.GRID, periods=((0, 7),))), T0, CTX, 7, "grid",
     "g"),
    ("W -> A, 230 V 1-phase", (prof("w", unit=RateUnit.W, periods=((0, 2300),)),), T0, CTX, 10,
     "default", "w"),
    ("W -> A, 3-phase: W / (3 V)", (prof("w", unit=RateUnit.W, periods=((0, 11040),)),), T0,
     ChargeContext(voltages_v=(230.0, 230.0, 230.0), phases_in_use=3), 16, "default", "w"),
    ("W -> A, measured unbalanced", (prof("w", unit=RateUnit.W, periods=((0, 6900),)),), T0,
     ChargeContext(voltages_v=(220.0, 230.0, 240.0), phases_in_use=3), 10, "default", "w"),
    ("W -> A, implausible reading uses nominal",
     (prof("w", unit=RateUnit.W, periods=((0, 2300),)),), T0,
     ChargeContext(voltages_v=(0.0,), phases_in_use=1), 10, "default", "w"),
    ("other connector's profile ignored", (BASE, prof("c2", level=3, periods=((0, 8),),
     connector=2)), T0, CTX, 16, "default", "base"),
    ("connector profile beats all-connector at same level",
     (BASE, prof("c1", level=0, periods=((0, 9),), connector=1)), T0, CTX, 9, "default", "c1"),
]
# fmt: on


@pytest.mark.parametrize(
    ("profiles", "t", "ctx", "limit", "source", "pid"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_ocpp_examples(
    profiles: tuple[ChargingProfile, ...],
    t: float,
    ctx: ChargeContext,
    limit: float,
    source: str,
    pid: str,
) -> None:
    c = make(*profiles).composite(t, 1, ctx)
    assert c.limit_a == pytest.approx(limit)
    assert (c.source, c.profile_id, c.below_minimum) == (source, pid, False)


def test_session_replaces_default_only_for_its_session() -> None:
    engine = make(prof("d", periods=((0, 10),)))
    sess = prof("s", Layer.SESSION, periods=((0, 20),), start=None, valid_from=T0)
    assert engine.apply_profile(sess, T0, session_start=T0).status is Status.ACCEPTED
    # Session replaces default even though it is higher: replacement, not minimum.
    c = engine.composite(T0 + H, 1, replace(CTX, session_start=T0))
    assert (c.limit_a, c.source, c.profile_id) == (20, "session", "s")
    assert engine.composite(T0 + H, 1, CTX).profile_id == "d"
    other = engine.composite(T0 + 2 * H, 1, replace(CTX, session_start=T0 + 2 * H))
    assert other.profile_id == "d"
    assert [p.profile_id for p in engine.end_session()] == ["s"]


def test_session_profile_needs_a_session() -> None:
    sess = prof("s", Layer.SESSION, start=None, valid_from=T0)
    result = make().apply_profile(sess, T0)
    assert (result.status, result.reason) == (Status.REJECTED, Reason.NO_ACTIVE_SESSION)


def test_same_layer_and_level_replaces_and_reports() -> None:
    engine = make(BASE)
    newer = prof("newer", level=0, periods=((0, 12),))
    result = engine.apply_profile(newer, T0)
    assert result.superseded == (BASE,)
    assert engine.profiles == (newer,)
    same_id = replace(newer, stack_level=4)
    assert engine.apply_profile(same_id, T0).superseded == (newer,)
    assert engine.profiles == (same_id,)


def test_local_limits_join_the_minimum() -> None:
    ctx = replace(CTX, local=LocalLimits(hardware_a=32, cable_a=13, site_a=20))
    c = make(BASE).composite(T0, 1, ctx)
    assert (c.limit_a, c.source, c.profile_id) == (13, "local:cable", None)
    assert make().composite(T0, 1, CTX).limit_a is None


def test_below_minimum_pauses() -> None:
    c = make(prof("low", periods=((0, 5),))).composite(T0, 1, CTX)
    assert (c.limit_a, c.below_minimum, c.raw_a) == (0.0, True, 5)


def test_set_limit_lease_lapses_by_itself() -> None:
    engine = make(BASE)
    result = engine.set_limit("c1", 10, "A", 900, T0, priority=2)
    assert result.status is Status.ACCEPTED
    c = engine.composite(T0 + 899, 1, CTX)
    assert (c.limit_a, c.source, c.command_id, c.layer) == (10, "grid", "c1", Layer.GRID)
    assert engine.composite(T0 + 900, 1, CTX).profile_id == "base"
    assert engine.purge_expired(T0 + 899) == []
    assert [p.source_command_id for p in engine.purge_expired(T0 + 900)] == ["c1"]


def test_set_limit_units_start_and_priority() -> None:
    engine = make()
    assert engine.set_limit("kw", 3.68, "kW", 3600, T0, priority=1).status is Status.ACCEPTED
    assert engine.composite(T0, 1, CTX).limit_a == pytest.approx(16)
    engine.set_limit("later", 8, "A", 600, T0, start_at=T0 + 600, priority=5)
    assert engine.composite(T0 + 599, 1, CTX).command_id == "kw"
    assert engine.composite(T0 + 600, 1, CTX).command_id == "later"
    # Higher priority wins within the grid layer even when it is the higher limit.
    engine.set_limit("top", 20, "A", 600, T0, priority=9)
    c = engine.composite(T0 + 300, 1, CTX)
    assert (c.command_id, c.limit_a) == ("top", 20)
    bad = engine.set_limit("x", 1, "VA", 60, T0)
    assert (bad.status, bad.reason) == (Status.REJECTED, Reason.UNIT_UNSUPPORTED)
    neg = engine.set_limit("x", -1, "A", 60, T0)
    assert neg.status is Status.NOT_SUPPORTED
    zero = engine.set_limit("x", 5, "A", 0, T0)
    assert zero.reason is Reason.INVALID_SCHEDULE


def test_value_zero_pauses_and_same_priority_supersedes() -> None:
    engine = make(BASE)
    engine.set_limit("first", 10, "A", 900, T0)
    result = engine.set_limit("pause", 0, "A", 900, T0)
    assert [p.source_command_id for p in result.superseded] == ["first"]
    c = engine.composite(T0, 1, CTX)
    assert (c.limit_a, c.below_minimum, c.command_id) == (0.0, True, "pause")


def test_clear_filters() -> None:
    engine = make(BASE, prof("g1", Layer.GRID, 1), prof("g2", Layer.GRID, 2))
    assert [p.profile_id for p in engine.clear(layer=Layer.GRID, stack_level=2)] == ["g2"]
    assert engine.clear(profile_id="nope") == []
    assert [p.profile_id for p in engine.clear()] == ["base", "g1"]


def test_get_composite_24h_breakpoints() -> None:
    valley = prof(
        "valley",
        periods=((0, 32), (7 * H, 10), (23 * H, 32)),
        kind=ProfileKind.RECURRING,
        rec=Recurrency.DAILY,
    )
    engine = make(valley, prof("site", Layer.SITE_MAX, periods=((0, 16),)))
    engine.set_limit("evening", 6, "A", 2 * H, T0, start_at=T0 + 18 * H)
    got = engine.composite_schedule(T0, DAY, RateUnit.A, 1, CTX)
    assert [(p.start - T0, p.duration, p.limit, p.source) for p in got] == [
        (0, 7 * H, 16, "siteMax"),
        (7 * H, 11 * H, 10, "default"),
        (18 * H, 2 * H, 6, "grid"),
        (20 * H, 3 * H, 10, "default"),
        (23 * H, H, 16, "siteMax"),
    ]
    watts = engine.composite_schedule(T0, DAY, RateUnit.W, 1, CTX)
    assert [p.limit for p in watts] == [3680, 2300, 1380, 2300, 3680]
    assert engine.next_change_after(T0, 1, CTX) == T0 + 7 * H
    assert engine.next_change_after(T0 + 18 * H, 1, CTX) == T0 + 20 * H
    assert engine.next_change_after(T0 + 23 * H, 1, CTX) == T0 + DAY


def test_next_change_none_when_nothing_scheduled() -> None:
    engine = make(BASE)
    assert engine.next_change_after(T0, 1, CTX) is None
    assert engine.composite_schedule(T0, 0, RateUnit.A, 1, CTX) == []
    (whole,) = engine.composite_schedule(T0, DAY, RateUnit.A, 1, CTX)
    assert (whole.start, whole.duration, whole.limit, whole.profile_id) == (T0, DAY, 16, "base")


OFFLINE = replace(CTX, link=LinkState(online=False, since=T0))


def test_failsafe_entered_after_after_s_and_lifted_on_reconnect() -> None:
    engine = make(BASE)
    assert engine.configure_failsafe(60, 10, "A") is Reason.OK
    assert engine.composite(T0 + 59, 1, OFFLINE).profile_id == "base"
    assert engine.next_change_after(T0 + 10, 1, OFFLINE) == T0 + 60
    c = engine.composite(T0 + 60, 1, OFFLINE)
    assert (c.limit_a, c.source) == (10, "failsafe")
    assert engine.failsafe_active(T0 + 60, OFFLINE)
    back = replace(CTX, link=LinkState(online=True, since=T0 + 120))
    assert engine.composite(T0 + 121, 1, back).profile_id == "base"
    assert not engine.failsafe_active(T0 + 121, back)


def test_failsafe_must_allow_charging() -> None:
    engine = make()
    for after, value, unit in [(60, 5, "A"), (60, 0, "A"), (60, 1000, "W"), (-1, 10, "A")]:
        assert engine.configure_failsafe(after, value, unit) is Reason.LOCAL_CONSTRAINT
    assert engine.failsafe is None
    assert engine.configure_failsafe(60, 1.4, "kW") is Reason.OK
    assert engine.configure_failsafe(60, 1, "VA") is Reason.UNIT_UNSUPPORTED
    three = LimitsEngine(random.Random(1).uniform, EngineConfig(supply_phases=3))
    assert three.configure_failsafe(60, 1400, "W") is Reason.LOCAL_CONSTRAINT
    with pytest.raises(ConfigError):
        LimitsEngine(random.Random(1).uniform, failsafe=FailsafeConfig(60, 0, RateUnit.A))


def test_failsafe_in_watts_never_pauses_on_three_phases() -> None:
    engine = make()
    assert engine.configure_failsafe(0, 1400, "W") is Reason.OK
    ctx = replace(OFFLINE, phases_in_use=3)
    c = engine.composite(T0, 1, ctx)
    assert (c.limit_a, c.source, c.below_minimum) == (6, "failsafe", False)


def test_max_offline_lapses_local_schedule_keeps_running() -> None:
    grid = prof("grid8", Layer.GRID, periods=((0, 8),), max_offline=300)
    engine = make(BASE, grid)
    ctx = replace(CTX, link=LinkState(online=False, since=T0 + 100))
    assert engine.composite(T0 + 399, 1, ctx).profile_id == "grid8"
    assert engine.next_change_after(T0 + 150, 1, ctx) == T0 + 400
    assert engine.composite(T0 + 400, 1, ctx).profile_id == "base"
    online = replace(CTX, link=LinkState(online=True, since=T0 + 900))
    assert engine.composite(T0 + 901, 1, online).profile_id == "grid8"


def test_discharge_is_not_supported() -> None:
    result = make().apply_profile(prof("v2g", periods=((0, -10),)), T0)
    assert (result.status, result.reason) == (Status.NOT_SUPPORTED, Reason.LOCAL_CONSTRAINT)


def test_too_many_profiles_is_a_local_constraint() -> None:
    engine = LimitsEngine(random.Random(1).uniform, EngineConfig(max_profiles=2))
    assert engine.apply_profile(prof("a", level=0), T0).status is Status.ACCEPTED
    assert engine.apply_profile(prof("b", level=1), T0).status is Status.ACCEPTED
    assert engine.apply_profile(prof("c", level=2), T0).reason is Reason.LOCAL_CONSTRAINT
    assert engine.apply_profile(prof("b", level=5), T0).status is Status.ACCEPTED


def test_state_round_trips_through_json() -> None:
    engine = make(BASE, NIGHT, THURSDAY)
    engine.set_limit("c1", 7.5, "kW", 3 * H, T0, randomize_start_s=600, priority=1)
    engine.configure_failsafe(120, 8, "A")
    engine.configure_random_delay(300)
    data = json.loads(json.dumps(engine.to_dict()))
    again = LimitsEngine.from_dict(data, random.Random(0).uniform)
    assert again.installed == engine.installed
    assert again.failsafe == engine.failsafe
    assert again.random_delay_max_s == 300
    a = engine.composite_schedule(T0, 7 * DAY, RateUnit.W, 1, OFFLINE)
    assert again.composite_schedule(T0, 7 * DAY, RateUnit.W, 1, OFFLINE) == a
    with pytest.raises(ConfigError):
        LimitsEngine.from_dict({**data, "version": 99}, random.Random(0).uniform)
