"""Randomised delay: drawn once per event from an injected seeded source, skipped for dsr."""

from __future__ import annotations

import random
from dataclasses import replace

from agent.limits import (
    ChargeContext,
    ChargingProfile,
    Layer,
    LimitsEngine,
    Period,
    ProfileKind,
    RateUnit,
    Reason,
    Schedule,
)

T0 = 1_795_651_200.0
MAX = 600.0
SESSION = ChargeContext(voltages_v=(230.0,), phases_in_use=1, session_start=T0)
DEFAULT16 = ChargingProfile(
    profile_id="d16",
    layer=Layer.DEFAULT,
    stack_level=0,
    kind=ProfileKind.ABSOLUTE,
    schedule=Schedule(RateUnit.A, (Period(0, 16),), start_at=T0 - 3600),
)


class CountingUniform:
    """A seeded uniform source that records every draw."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.calls: list[tuple[float, float, float]] = []

    def __call__(self, a: float, b: float) -> float:
        value = self.rng.uniform(a, b)
        self.calls.append((a, b, value))
        return value


def make(seed: int = 3, max_s: float = MAX) -> tuple[LimitsEngine, CountingUniform]:
    uniform = CountingUniform(seed)
    engine = LimitsEngine(uniform, random_delay_max_s=max_s)
    engine.apply_profile(DEFAULT16, T0 - 3600)
    return engine, uniform


def start_charging(engine: LimitsEngine, uniform: CountingUniform) -> float:
    """Runs through the charge-start delay; returns the instant charging started."""
    first = engine.effective_limit(T0, 1, SESSION)
    assert first.drawn is not None
    engine.effective_limit(first.drawn.until, 1, SESSION)
    return first.drawn.until


def test_charge_start_waits_one_draw() -> None:
    engine, uniform = make()
    eff = engine.effective_limit(T0, 1, SESSION)
    assert eff.drawn is not None and eff.drawn.what == "chargeStart"
    assert 0 <= eff.drawn.drawn_s <= MAX and len(uniform.calls) == 1
    assert uniform.calls[0][:2] == (0.0, MAX)
    assert (eff.limit_a, eff.paused, eff.target.limit_a) == (0.0, True, 16)
    until = eff.drawn.until
    assert until == T0 + eff.drawn.drawn_s
    assert engine.next_change_after(T0, 1, SESSION) == until
    assert [d.what for d in engine.pending_delays(T0)] == ["chargeStart"]
    for t in (T0 + 1, (T0 + until) / 2, until - 0.001):
        held = engine.effective_limit(t, 1, SESSION)
        assert (held.limit_a, held.drawn) == (0.0, None)
    assert len(uniform.calls) == 1
    done = engine.effective_limit(until, 1, SESSION)
    assert (done.limit_a, done.pending, done.paused) == (16, None, False)
    assert engine.pending_delays(until) == []


def test_draws_are_reproducible_with_the_same_seed() -> None:
    a = make(seed=11)[0].effective_limit(T0, 1, SESSION).drawn
    b = make(seed=11)[0].effective_limit(T0, 1, SESSION).drawn
    assert a is not None and a == b


def test_decrease_is_immediate_increase_waits() -> None:
    engine, uniform = make()
    started = start_charging(engine, uniform)
    engine.set_limit("cut", 8, "A", 600, started)
    eff = engine.effective_limit(started, 1, SESSION)
    assert (eff.limit_a, eff.drawn) == (8, None)
    assert len(uniform.calls) == 1
    lapse = started + 600
    eff = engine.effective_limit(lapse, 1, SESSION)
    assert eff.drawn is not None and eff.drawn.what == "increase"
    assert eff.limit_a == 8 and eff.target.limit_a == 16
    assert len(uniform.calls) == 2
    for t in (lapse + 1, lapse + eff.drawn.drawn_s / 2):
        assert engine.effective_limit(t, 1, SESSION).limit_a == 8
    assert len(uniform.calls) == 2
    assert engine.effective_limit(eff.drawn.until, 1, SESSION).limit_a == 16


def test_dsr_lease_ending_still_randomises_restore() -> None:
    engine, uniform = make()
    started = start_charging(engine, uniform)
    engine.set_limit("dsr", 6, "A", 300, started, dsr=True)
    assert engine.effective_limit(started, 1, SESSION).limit_a == 6
    eff = engine.effective_limit(started + 300, 1, SESSION)
    assert eff.drawn is not None and eff.limit_a == 6


def test_dsr_increase_applies_at_once() -> None:
    engine, uniform = make()
    started = start_charging(engine, uniform)
    engine.set_limit("down", 6, "A", 900, started, dsr=True)
    engine.effective_limit(started, 1, SESSION)
    engine.set_limit("up", 12, "A", 900, started + 60, dsr=True)
    eff = engine.effective_limit(started + 60, 1, SESSION)
    assert (eff.limit_a, eff.drawn, eff.pending) == (12, None, None)
    assert len(uniform.calls) == 1


def test_non_dsr_increase_waits() -> None:
    engine, uniform = make()
    started = start_charging(engine, uniform)
    engine.set_limit("down", 6, "A", 900, started)
    engine.effective_limit(started, 1, SESSION)
    engine.set_limit("up", 12, "A", 900, started + 60)
    eff = engine.effective_limit(started + 60, 1, SESSION)
    assert eff.limit_a == 6 and eff.drawn is not None and eff.drawn.command_id == "up"


def test_dsr_does_not_skip_the_first_charge_start() -> None:
    engine, _ = make()
    engine.set_limit("dsr", 10, "A", 3600, T0 - 10, dsr=True)
    eff = engine.effective_limit(T0, 1, SESSION)
    assert eff.limit_a == 0 and eff.drawn is not None and eff.drawn.what == "chargeStart"


def test_increase_during_pending_keeps_the_draw() -> None:
    engine, uniform = make()
    engine.set_limit("low", 10, "A", 100, T0)
    eff = engine.effective_limit(T0, 1, SESSION)
    assert eff.drawn is not None and eff.drawn.drawn_s > 100
    later = engine.effective_limit(T0 + 100, 1, SESSION)
    assert later.pending is not None and later.pending.target_a == 16
    assert later.pending.until == eff.drawn.until and len(uniform.calls) == 1


def test_drop_during_pending_cancels_it() -> None:
    engine, uniform = make()
    started = start_charging(engine, uniform)
    engine.set_limit("cut", 8, "A", 60, started)
    engine.effective_limit(started, 1, SESSION)
    pending = engine.effective_limit(started + 60, 1, SESSION)
    assert pending.pending is not None
    engine.set_limit("deeper", 6, "A", 600, started + 61)
    eff = engine.effective_limit(started + 61, 1, SESSION)
    assert (eff.limit_a, eff.pending) == (6, None)


def test_disabled_delay_and_no_session() -> None:
    engine, uniform = make(max_s=0)
    eff = engine.effective_limit(T0, 1, SESSION)
    assert (eff.limit_a, eff.drawn) == (16, None) and uniform.calls == []
    idle = engine.effective_limit(T0 + 1, 1, replace(SESSION, session_start=None))
    assert (idle.limit_a, idle.paused) == (0.0, True)


def test_configure_random_delay_bounds() -> None:
    engine, _ = make()
    assert engine.configure_random_delay(1801) is Reason.LOCAL_CONSTRAINT
    assert engine.configure_random_delay(-1) is Reason.LOCAL_CONSTRAINT
    assert engine.configure_random_delay(1800) is Reason.OK
    assert engine.random_delay_max_s == 1800


def test_randomize_start_spreads_the_lease() -> None:
    engine, uniform = make(max_s=0)
    result = engine.set_limit("grp", 6, "A", 900, T0, randomize_start_s=300, dsr=True)
    spread = result.start_delay_s
    assert 0 < spread <= 300 and uniform.calls[0][:2] == (0.0, 300)
    assert engine.composite(T0 + spread - 1, 1, SESSION).profile_id == "d16"
    assert engine.composite(T0 + spread, 1, SESSION).command_id == "grp"
    assert engine.composite(T0 + spread + 899, 1, SESSION).command_id == "grp"
    assert engine.composite(T0 + spread + 900, 1, SESSION).profile_id == "d16"
    (pending,) = engine.pending_delays(T0)
    assert (pending.what, pending.drawn_s, pending.until) == ("randomizeStart", spread, T0 + spread)
    assert engine.next_change_after(T0, 1, SESSION) == T0 + spread
    assert engine.pending_delays(T0 + spread) == []


def test_uniform_out_of_bounds_is_clamped() -> None:
    engine = LimitsEngine(lambda a, b: b + 50, random_delay_max_s=MAX)
    engine.apply_profile(DEFAULT16, T0)
    eff = engine.effective_limit(T0, 1, SESSION)
    assert eff.drawn is not None and eff.drawn.drawn_s == MAX
