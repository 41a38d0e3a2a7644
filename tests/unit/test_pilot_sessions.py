"""Session boundaries (issue 9): the previous session never holds back the next vehicle.

- Once the connector has been seen unplugged (CP state 1), the next plug-in gets its PWM offer
  in the time a fresh machine takes; ``min_off_s`` still protects the contactor within one
  session (pause/resume, a fault cleared by reset), and the hourly close cap always applies.
- A fault that clears by "unplug or reset" remembers the unplug: it clears once unplugged and
  the cause is gone, whichever comes last. A current that an open contactor cut is no cause.

Times are simulated seconds of the in-memory rig.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from test_limits_delay import DEFAULT16, SESSION, T0
from test_pilot_rig import Rig

from agent.faults import FAULTS, ClearPolicy, FaultCode
from agent.limits import LimitsEngine
from agent.pilot import (
    Authorize,
    FaultCleared,
    FaultRaised,
    LimitChanged,
    PilotSettings,
    PilotState,
    ResetRequested,
    SetContactor,
    SetDuty,
    StopRequested,
)
from agent.pilot.profiles import DUTY_PWM_MAX, DUTY_PWM_MIN

OPEN, CLOSE = SetContactor(False), SetContactor(True)
EPS = 1e-9  # rig times are sums of 10 ms steps


def first_pwm(rig: Rig, since: float) -> float | None:
    """Rig time of the first PWM duty command at or after ``since``."""
    for when, _, step in rig.log:
        if when < since:
            continue
        for a in step.actions:
            if isinstance(a, SetDuty) and DUTY_PWM_MIN <= a.duty <= DUTY_PWM_MAX:
                return when
    return None


def normal_offer_delay(settings: PilotSettings) -> float:
    """How long a fresh machine takes from plug-in (state 2) to its PWM offer."""
    rig = Rig(settings)
    rig.run(0.5)
    t = rig.now
    rig.plug("2", settle=0.5)
    at = first_pwm(rig, t)
    assert at is not None
    return at - t


def charging_rig(**settings: object) -> Rig:
    rig = Rig(PilotSettings(**settings))  # type: ignore[arg-type]
    rig.plug("2")
    rig.ev.cp = "3"
    rig.run(0.5)
    assert rig.m.state is PilotState.CHARGING
    return rig


def unplug_and_replug(rig: Rig, after_s: float, cp: str = "2") -> float:
    """Unplug, wait ``after_s`` unplugged, plug in again; returns the plug-in time."""
    rig.ev.ignore_duty_a = None
    rig.ev.cp = "1"
    rig.run(after_s)
    t = rig.now
    rig.plug(cp, settle=0.5)
    return t


def assert_normal_offer(rig: Rig, plugged_at: float) -> None:
    at = first_pwm(rig, plugged_at)
    assert at is not None, rig.m.active_faults
    assert at - plugged_at <= normal_offer_delay(rig.settings) + EPS


# --- the minimum off time ends with the session --------------------------------------------


@pytest.mark.parametrize("after_s", [0.5, 2.0, 10.0])
def test_after_our_pause_a_replug_gets_pwm_at_once(after_s: float) -> None:
    rig = charging_rig()
    rig.feed(StopRequested("curtail"))
    rig.run(1.0)
    assert not rig.coil and rig.m.state is PilotState.CONNECTED
    rig.feed(Authorize(None))  # the stop ended the authorisation; it is the vehicle's to end
    rig.run(1.0)
    assert not rig.pwm  # within the session: min_off_s holds
    t = unplug_and_replug(rig, after_s)
    assert_normal_offer(rig, t)
    rig.ev.cp = "3"
    rig.run(1.0)
    assert rig.coil and rig.m.state is PilotState.CHARGING


def test_pause_by_limit_then_resume_still_waits_min_off_within_the_session() -> None:
    rig = charging_rig(min_off_s=60.0)
    t = rig.now
    rig.feed(LimitChanged(4.0))
    rig.run(1.0)
    opened = rig.first_time(OPEN, t)
    assert opened is not None and rig.m.state is PilotState.CONNECTED
    rig.feed(LimitChanged(16.0))
    rig.run(58.0)
    assert not rig.pwm and rig.first_time(CLOSE, t) is None
    rig.run(3.0)
    closed = rig.first_time(CLOSE, t)
    assert closed is not None and closed - opened >= 60.0


def test_a_pause_then_unplug_inside_the_pause_frees_the_next_plug_in() -> None:
    rig = charging_rig(min_off_s=60.0)
    rig.feed(LimitChanged(4.0))  # PAUSING: PWM off, contactor closed until the EV stops
    rig.ev.cp = "1"  # the driver unplugs while the pause is under way
    rig.run(0.5)
    assert not rig.coil
    rig.feed(LimitChanged(None))
    t = rig.now
    rig.plug("2", settle=0.5)
    assert_normal_offer(rig, t)


def test_the_hourly_close_cap_still_applies_across_sessions() -> None:
    rig = charging_rig(max_cycles_per_hour=2)
    t = unplug_and_replug(rig, 0.5, cp="3")  # close number two
    assert rig.coil
    t = unplug_and_replug(rig, 0.5)
    rig.ev.cp = "3"
    rig.run(60.0)
    assert first_pwm(rig, t) is None and not rig.coil  # cap reached: no PWM, no close


def test_the_randomised_delay_still_applies_to_the_next_session() -> None:
    """The pilot's minimum off time ends with the session; the random delay of the limits
    layer does not: the next session's first charge start waits a draw of its own."""
    draws: list[float] = []

    def uniform(a: float, b: float) -> float:
        draws.append(random.Random(len(draws)).uniform(a, b))
        return draws[-1]

    engine = LimitsEngine(uniform, random_delay_max_s=600.0)
    engine.apply_profile(DEFAULT16, T0 - 3600)
    first = engine.effective_limit(T0, 1, SESSION)
    assert first.drawn is not None
    assert engine.effective_limit(first.drawn.until, 1, SESSION).limit_a == 16
    unplugged = first.drawn.until + 60.0
    engine.effective_limit(unplugged, 1, replace(SESSION, session_start=None))
    again = unplugged + 0.5
    nxt = engine.effective_limit(again, 1, replace(SESSION, session_start=again))
    assert nxt.drawn is not None and nxt.drawn.what == "chargeStart" and len(draws) == 2
    assert (nxt.limit_a, nxt.paused) == (0.0, True)  # no PWM until the new draw is over


def test_a_different_car_after_a_fault_cleared_by_unplug_gets_pwm_at_once() -> None:
    rig = charging_rig(min_off_s=60.0)
    rig.ev.cp = "short"
    rig.run(0.2)
    assert rig.m.state is PilotState.FAULT and not rig.coil
    t = unplug_and_replug(rig, 0.5)
    assert rig.m.active_faults == frozenset()
    assert_normal_offer(rig, t)


def test_a_fault_cleared_by_reset_without_unplug_still_waits_min_off() -> None:
    rig = charging_rig(min_off_s=60.0)
    rig.set_cause(1 << 1)  # PE loss
    t = rig.now
    rig.run(0.1)
    opened = rig.first_time(OPEN, t)
    rig.set_cause(1 << 1, present=False)
    rig.run(1.5)
    rig.feed(ResetRequested())
    rig.feed(Authorize("card"))
    rig.run(30.0)
    assert rig.m.active_faults == frozenset() and not rig.pwm  # same session: min off
    rig.run(31.0)
    closed = rig.first_time(CLOSE, t)
    assert opened is not None and closed is not None and closed - opened >= 60.0


# --- faults that clear on unplug ------------------------------------------------------------


@pytest.mark.parametrize("after_s", [0.05, 0.5, 2.0, 10.0])
def test_overcurrent_then_quick_unplug_clears_and_the_next_plug_in_charges(
    after_s: float,
) -> None:
    # The meter is read every 2 s: the unplug is seen before any reading after the cut.
    rig = charging_rig(hardware_rating_a=16.0)
    rig.ev.ignore_duty_a = 25.0
    t = rig.now
    for _ in range(12):
        rig.run(1.0, meter_every=2.0)
        if not rig.coil:
            break
    assert rig.m.active_faults == frozenset({FaultCode.OVERCURRENT})
    rig.ev.ignore_duty_a = None
    rig.ev.cp = "1"
    rig.run(after_s, meter_every=60.0)
    assert FaultCleared(FaultCode.OVERCURRENT) in rig.actions_since(t)
    plugged = rig.now
    rig.plug("2", settle=0.5)
    assert_normal_offer(rig, plugged)
    rig.ev.cp = "3"
    rig.run(1.0)
    assert rig.coil and rig.m.state is PilotState.CHARGING


def test_an_overcurrent_onset_does_not_survive_the_open() -> None:
    """A re-close before the next meter sample must not inherit the cut current's onset."""
    rig = charging_rig(hardware_rating_a=16.0)
    rig.ev.ignore_duty_a = 25.0
    rig.run(4.0, meter_every=0.5)  # onset 4 s old, not yet tripped
    rig.meter_silent = True  # no meter sample from here on (within the 10 s grace)
    rig.ev.cp = "2"  # the EV opens S2: the contactor opens (no fault)
    rig.run(0.1)
    assert not rig.coil and rig.m.active_faults == frozenset()
    rig.ev.ignore_duty_a = None
    rig.ev.cp = "3"
    rig.run(2.0)  # closed again, no meter sample since the open
    assert rig.coil and rig.m.active_faults == frozenset()


@pytest.mark.parametrize("after_s", [0.5, 2.0])
def test_cause_present_at_the_unplug_clears_when_it_goes_even_after_a_replug(
    after_s: float,
) -> None:
    """Unplugged and cause gone, whichever comes last: here the cause goes last."""
    rig = charging_rig()
    rig.set_cause(1 << 2)  # over temperature, still hot when the driver unplugs
    rig.run(0.1)
    assert rig.m.state is PilotState.FAULT
    rig.ev.cp = "1"
    rig.run(after_s)
    t = rig.now
    rig.plug("2", settle=1.0)
    assert FaultCode.OVERTEMP in rig.m.active_faults and not rig.pwm
    rig.set_cause(1 << 2, present=False)  # cooled down; the board clears the bit on reset
    cooled = rig.now
    rig.run(2.0)
    assert rig.m.active_faults == frozenset()
    at = first_pwm(rig, t)
    assert at is not None
    bound = rig.settings.board_reset_interval_s + normal_offer_delay(rig.settings)
    assert at - cooled <= bound + EPS


def test_without_an_unplug_a_safety_fault_stays_latched() -> None:
    rig = charging_rig()
    rig.set_cause(1 << 0)  # RCD
    rig.run(0.1)
    rig.set_cause(1 << 0, present=False)
    rig.ev.cp = "2"
    rig.run(5.0)
    assert FaultCode.RCD_TRIP in rig.m.active_faults and not rig.pwm


def test_an_unplug_seen_before_the_fault_does_not_count() -> None:
    rig = charging_rig()
    rig.ev.cp = "1"
    rig.run(0.5)
    rig.plug("3", settle=1.0)
    assert rig.coil
    rig.lock_stuck = True  # lock feedback lost while engaged: LOCK_FAILED
    rig.run(0.2)
    rig.lock_stuck = False
    rig.run(2.0)
    assert FaultCode.LOCK_FAILED in rig.m.active_faults


def test_a_welded_contactor_still_needs_a_reset_after_the_unplug() -> None:
    rig = charging_rig()
    rig.weld = True
    rig.ev.cp = "2"
    rig.run(1.0)
    rig.weld = False
    t = unplug_and_replug(rig, 2.0)
    assert FaultCode.CONTACTOR_WELDED in rig.m.active_faults and first_pwm(rig, t) is None
    rig.feed(ResetRequested())
    rig.run(0.5)
    assert rig.m.active_faults == frozenset()


# One way to cause each "unplug or reset" fault from charging, and to take the cause away.
BITS = {
    FaultCode.RCD_TRIP: 1 << 0, FaultCode.PE_LOSS: 1 << 1, FaultCode.OVERTEMP: 1 << 2,
    FaultCode.ESTOP: 1 << 3, FaultCode.PILOT_SELFTEST_FAIL: 1 << 5,
}


def cause(rig: Rig, code: FaultCode, present: bool) -> None:
    if code in BITS:
        rig.set_cause(BITS[code], present)
    elif code is FaultCode.CP_SHORT:
        rig.ev.cp = "short" if present else "1"
    elif code is FaultCode.CP_INVALID:
        rig.ev.cp = "invalid" if present else "1"
    elif code is FaultCode.DIODE_FAULT:
        rig.ev.diode_ok = not present
    elif code is FaultCode.OVERCURRENT:
        rig.ev.ignore_duty_a = 25.0 if present else None
    elif code is FaultCode.CONTACTOR_NO_CLOSE:
        rig.no_close = present  # the contactor drops out while closed
    elif code is FaultCode.LOCK_FAILED:
        rig.lock_stuck = present
    elif code is FaultCode.CC_INVALID:
        rig.cc_ohm = 0xFFFF if present else 220
    else:
        raise AssertionError(f"no way to cause {code}")


UNPLUG_OR_RESET = sorted(c for c, i in FAULTS.items() if i.clear is ClearPolicy.UNPLUG_OR_RESET)


@pytest.mark.parametrize("after_s", [0.5, 2.0])
@pytest.mark.parametrize("code", UNPLUG_OR_RESET)
def test_every_unplug_or_reset_fault_clears_on_the_unplug(code: FaultCode, after_s: float) -> None:
    rig = charging_rig(hardware_rating_a=16.0)
    cause(rig, code, True)
    for _ in range(12):
        rig.run(1.0)
        if code in rig.m.active_faults:
            break
    assert code in rig.m.active_faults and not rig.coil and not rig.pwm
    cause(rig, code, False)
    gone = rig.now
    rig.ev.cp = "1"
    rig.run(after_s)
    plugged = rig.now
    rig.plug("2", settle=1.5)
    assert rig.m.active_faults == frozenset()
    at = first_pwm(rig, plugged)
    assert at is not None
    latched = rig.settings.board_reset_interval_s if code in BITS else 0.0  # the board's copy
    assert at - max(plugged, gone + latched) <= normal_offer_delay(rig.settings) + EPS
    rig.ev.cp = "3"
    rig.run(1.0)
    assert rig.coil and rig.m.state is PilotState.CHARGING


# --- faults that clear by themselves: the session resumes ------------------------------------

# How to make each "cause gone" fault of the pilot core happen, and for how long.
LOSSES = {
    FaultCode.PILOT_BOARD_LOST: ("pilot_silent", 0.2),  # the agent's loop stalled 0.2 s
    FaultCode.PILOT_BOARD_FROZEN: ("freeze", 0.3),
    FaultCode.RELAY_BOARD_LOST: ("relay_silent", 1.2),
    FaultCode.METER_LOST: ("meter_silent", 11.0),
    FaultCode.PILOT_BOARD_FAILSAFE: ("status", 0.3),  # the board's watchdog bit
}
FAILSAFE_BIT = 1 << 4
CAUSE_GONE = sorted(
    c for c, i in FAULTS.items()
    if i.clear is ClearPolicy.CAUSE_GONE and not c.startswith("WALLBOX_")
)


def lose(rig: Rig, code: FaultCode, present: bool) -> None:
    name, _ = LOSSES[code]
    if name == "status":
        rig.set_cause(FAILSAFE_BIT, present)
    else:
        setattr(rig, name, present)


def hiccup(rig: Rig, code: FaultCode) -> float:
    """Charging, then ``code`` for its time, then its cause gone; returns the open's time."""
    t = rig.now
    lose(rig, code, True)
    rig.run(LOSSES[code][1])
    lose(rig, code, False)
    opened = rig.first_time(OPEN, t)
    assert opened is not None and code in [
        a.code for a in rig.actions_since(t) if isinstance(a, FaultRaised)
    ]
    return opened


@pytest.mark.parametrize("cp", ["3", "2"])
@pytest.mark.parametrize("code", CAUSE_GONE)
def test_a_fault_that_clears_by_itself_resumes_the_session_after_min_off(
    code: FaultCode, cp: str
) -> None:
    """The bench's PILOT_BOARD_LOST (issue 9): the EV still plugged in, holding state 3 (or
    back in 2), gets PWM again min_off_s after the fault's open, and charges; not before."""
    rig = charging_rig(min_off_s=60.0)
    opened = hiccup(rig, code)
    rig.ev.cp = cp
    rig.run(opened + 59.95 - rig.now)
    assert rig.m.active_faults == frozenset() and rig.m.state is PilotState.CONNECTED
    assert not rig.pwm and not rig.coil  # the minimum off time holds within the session
    rig.run(0.2)
    at = first_pwm(rig, opened)
    assert at is not None and opened + 60.0 - EPS <= at <= opened + 60.0 + 0.01 + EPS
    if cp == "2":
        assert rig.m.state is PilotState.OFFERING and not rig.coil
        rig.ev.cp = "3"
    rig.run(1.0)
    assert rig.coil and rig.m.state is PilotState.CHARGING
    rig.run(200.0)
    assert rig.coil and rig.m.state is PilotState.CHARGING
    assert rig.first_time(OPEN, opened + 0.01) is None


@pytest.mark.parametrize("code", CAUSE_GONE)
def test_a_pause_in_force_when_the_fault_clears_holds_the_offer(code: FaultCode) -> None:
    rig = charging_rig(min_off_s=60.0)
    opened = hiccup(rig, code)
    rig.feed(LimitChanged(4.0))
    rig.run(opened + 100.0 - rig.now)
    assert rig.m.active_faults == frozenset() and not rig.pwm and not rig.coil
    t = rig.now
    rig.feed(LimitChanged(None))
    rig.run(1.0)
    assert first_pwm(rig, t) == t and rig.coil


def test_a_safety_fault_seen_once_a_silent_board_answers_needs_a_fresh_start() -> None:
    """The RCD tripped while the pilot board was silent: it opened nothing itself (the lost
    board did), yet it ends charging in this plug-in like one that opened a closed contactor."""
    rig = charging_rig(min_off_s=5.0)
    rig.pilot_silent = True
    rig.run(0.2)
    rig.set_cause(1 << 0)  # RCD, latched in the board
    rig.pilot_silent = False
    rig.run(0.2)
    assert FaultCode.RCD_TRIP in rig.m.active_faults
    rig.set_cause(1 << 0, present=False)
    rig.run(1.5)
    rig.feed(ResetRequested())
    rig.run(30.0)
    assert rig.m.active_faults == frozenset() and not rig.pwm and not rig.coil
    rig.feed(Authorize("card"))
    rig.run(1.0)
    assert rig.coil and rig.m.state is PilotState.CHARGING


def test_the_auto_clearing_faults_are_all_exercised() -> None:
    assert set(CAUSE_GONE) == set(LOSSES)


@pytest.mark.parametrize("silent_for", [0.6, 1.2])
def test_a_relay_board_silent_at_the_close_is_a_loss_of_sight_not_a_contactor_that_failed(
    silent_for: float,
) -> None:
    """Found by the sessions state machine (cc3, 2026-12-05): the relay board fell silent as the
    contactor was commanded closed; the feedback timeout (0.5 s) ran out before relay_lost_s
    (1 s) and raised CONTACTOR_NO_CLOSE, a safety fault that needs a fresh start, so the EV
    never got PWM again. Without a sample after the deadline nothing says the contactor did
    not close: the board's silence is RELAY_BOARD_LOST ("cause gone"), and the session resumes."""
    rig = Rig(PilotSettings(min_off_s=5.0))
    rig.plug("2", settle=0.5)
    assert rig.pwm
    t = rig.now
    rig.relay_silent = True
    rig.ev.cp = "3"
    rig.run(silent_for)
    rig.relay_silent = False
    rig.run(0.5)
    raised = [a.code for a in rig.actions_since(t) if isinstance(a, FaultRaised)]
    assert FaultCode.CONTACTOR_NO_CLOSE not in raised
    assert raised == ([FaultCode.RELAY_BOARD_LOST] if silent_for > 1.0 else [])
    rig.run(6.0)
    assert rig.m.active_faults == frozenset()
    assert rig.coil and rig.m.state is PilotState.CHARGING


def test_a_relay_sample_after_the_deadline_that_shows_open_is_still_contactor_no_close() -> None:
    rig = Rig(PilotSettings(min_off_s=5.0))
    rig.plug("2", settle=0.5)
    t = rig.now
    rig.no_close = True
    rig.ev.cp = "3"
    rig.run(1.0)
    raised = [a.code for a in rig.actions_since(t) if isinstance(a, FaultRaised)]
    assert raised == [FaultCode.CONTACTOR_NO_CLOSE]
    assert rig.first_time(OPEN, t) is not None
