"""Clause-by-clause examples for the pilot machine, driven through the in-memory rig.

Times are simulated seconds (``rig.now``); asserting them is asserting behaviour.
"""

from __future__ import annotations

import pytest
from test_pilot_rig import Rig

from agent.faults import FaultCode
from agent.pilot import (
    IEC61851,
    Authorize,
    CpLevel,
    FaultCleared,
    FaultRaised,
    LimitChanged,
    OfferChanged,
    PilotSettings,
    PilotState,
    ResetBoardFaults,
    ResetRequested,
    SessionEvent,
    SetContactor,
    SetDuty,
    SetLock,
    StopRequested,
)

OPEN, CLOSE = SetContactor(False), SetContactor(True)
NO_PWM = SetDuty(1000)


def charging_rig(**settings: object) -> Rig:
    rig = Rig(PilotSettings(**settings))  # type: ignore[arg-type]
    rig.plug("2")
    rig.ev.cp = "3"
    rig.run(0.5)
    assert rig.m.state is PilotState.CHARGING
    return rig


def open_steps(rig: Rig, since: float) -> list[tuple[float, int]]:
    """(time, position in the step) of every open emitted since ``since``."""
    return [
        (when, step.actions.index(OPEN))
        for when, _, step in rig.log
        if when >= since and OPEN in step.actions
    ]


def faults_raised(rig: Rig) -> list[FaultCode]:
    return [a.code for a in rig.actions_since(0.0) if isinstance(a, FaultRaised)]


# --- normal sessions -------------------------------------------------------------------------


def test_normal_session_with_s2_follows_1_2_2prime_3prime() -> None:
    rig = Rig(PilotSettings(hardware_rating_a=32.0))
    rig.plug("2")
    assert rig.m.state is PilotState.OFFERING
    assert rig.duty == 533  # 32 A / 0.6 = 53.3 %
    assert rig.lock_coil and not rig.coil
    acts = rig.actions_since(0.0)
    assert SessionEvent("plugged") in acts and OfferChanged(31.98) in acts
    assert acts.index(SetLock(True)) < acts.index(SetDuty(533))
    rig.ev.cp = "3"
    t3 = rig.now
    rig.run(0.5)
    closed_at = rig.first_time(CLOSE, t3)
    assert closed_at is not None and closed_at - t3 <= 3.0  # GB/T 34657.1 item 3
    assert rig.m.state is PilotState.CHARGING
    assert SessionEvent("charging_started") in rig.actions_since(t3)


def test_vehicle_without_s2_goes_straight_to_3_and_charges() -> None:
    rig = Rig()
    rig.plug("3", settle=0.5)
    assert rig.m.state is PilotState.CHARGING
    states = [a.new for a in rig.actions_since(0.0) if hasattr(a, "new")]
    assert states[:3] == [PilotState.CONNECTED, PilotState.OFFERING, PilotState.CLOSING]


def test_close_is_the_last_command_and_needs_the_board_duty_echo() -> None:
    rig = Rig()
    rig.plug("3", settle=0.5)
    for _, _, step in rig.log:
        if CLOSE in step.actions:
            commands = [a for a in step.actions if isinstance(a, SetContactor | SetDuty | SetLock)]
            assert commands[-1] == CLOSE
    # the close came in a later step than the PWM start: the board had to echo the duty
    assert rig.first_time(CLOSE) > rig.first_time(SetDuty(533))  # type: ignore[operator]


def test_duty_change_while_charging_is_only_setduty() -> None:
    rig = charging_rig()
    t = rig.now
    rig.feed(LimitChanged(10.0))
    rig.run(0.2)
    acts = rig.actions_since(t)
    assert SetDuty(166) in acts
    assert not [a for a in acts if isinstance(a, SetContactor)]
    assert rig.m.state is PilotState.CHARGING


# --- the vehicle opens ---------------------------------------------------------------------


def test_s2_open_opens_in_the_observing_step_and_keeps_pwm_then_recloses() -> None:
    rig = charging_rig()
    rig.ev.cp = "2"
    t = rig.now
    rig.run(0.1)
    [(when, pos)] = open_steps(rig, t)
    assert pos == 0 and when - t <= 0.03  # two 10 ms samples of debounce
    assert rig.m.state is PilotState.OFFERING and rig.pwm  # PWM kept (item 11)
    assert NO_PWM not in rig.actions_since(t)
    rig.ev.cp = "3"
    t = rig.now
    rig.run(0.5)
    assert rig.first_time(CLOSE, t) is not None  # S2 opens are exempt from min_off_s
    assert rig.m.state is PilotState.CHARGING


def test_unplug_under_load_opens_first_stops_pwm_and_releases_the_lock() -> None:
    rig = charging_rig()
    rig.ev.cp = "1"
    t = rig.now
    rig.run(6.0)
    (when, pos), *_ = open_steps(rig, t)
    assert pos == 0 and when - t <= 0.03
    step = next(s for w, _, s in rig.log if w == when and OPEN in s.actions)
    assert NO_PWM in step.actions
    release = rig.first_time(SetLock(False), t)
    assert release is not None and release - t <= 5.0
    assert rig.m.state is PilotState.IDLE
    acts = rig.actions_since(t)
    assert SessionEvent("unplugged") in acts
    assert SessionEvent("charging_stopped", "CP state 1") in acts


# --- faults ------------------------------------------------------------------------------------


def test_cp_short_latches_until_unplug() -> None:
    rig = charging_rig()
    rig.ev.cp = "short"
    t = rig.now
    rig.run(0.1)
    assert open_steps(rig, t)[0][1] == 0
    assert faults_raised(rig) == [FaultCode.CP_SHORT]
    assert rig.duty == 1000 and rig.m.state is PilotState.FAULT
    rig.ev.cp = "2"  # short removed, vehicle still there: still latched
    rig.run(1.0)
    assert FaultCode.CP_SHORT in rig.m.active_faults
    rig.ev.cp = "1"
    rig.run(0.1)
    assert rig.m.active_faults == frozenset() and rig.m.state is PilotState.IDLE


def test_cp_invalid_level_needs_two_samples_and_is_a_fault() -> None:
    rig = charging_rig()
    rig.ev.cp = "invalid"
    rig.run(0.1)
    assert faults_raised(rig) == [FaultCode.CP_INVALID]
    assert not rig.coil


def test_cc_break_opens_and_releases_the_lock() -> None:
    rig = charging_rig()
    rig.cc_ohm = 0xFFFF
    t = rig.now
    rig.run(1.0)
    assert open_steps(rig, t)[0] == (pytest.approx(t + 0.02), 0)
    assert faults_raised(rig) == [FaultCode.CC_INVALID]
    assert not rig.lock_coil


@pytest.mark.parametrize(
    ("bit", "code"),
    [
        (1 << 0, FaultCode.RCD_TRIP),
        (1 << 1, FaultCode.PE_LOSS),
        (1 << 2, FaultCode.OVERTEMP),
        (1 << 3, FaultCode.ESTOP),
        (1 << 5, FaultCode.PILOT_SELFTEST_FAIL),
    ],
)
def test_board_safety_bits_open_at_once_and_clear_by_reset_after_cause(
    bit: int, code: FaultCode
) -> None:
    rig = charging_rig()
    rig.set_cause(bit)
    t = rig.now
    rig.run(0.05)
    when, pos = open_steps(rig, t)[0]
    assert pos == 0 and when - t <= 0.011  # a status bit needs no debounce
    assert faults_raised(rig) == [code] and rig.duty == 1000
    rig.run(2.0)
    assert ResetBoardFaults() in rig.actions_since(t)  # the board is asked to re-check
    assert code in rig.m.active_faults  # cause still present
    rig.set_cause(bit, present=False)
    rig.run(3.0)
    assert code in rig.m.active_faults  # safety: cause gone is not enough while plugged
    rig.feed(ResetRequested())
    rig.run(0.1)
    assert code not in rig.m.active_faults
    # no auto re-close after a protective trip within the same plug-in
    rig.run(70.0)
    assert not rig.coil and rig.m.state is PilotState.CONNECTED


def test_failsafe_bit_is_not_safety_and_clears_when_the_board_recovers() -> None:
    rig = Rig()
    rig.plug("2")
    rig.set_cause(1 << 4)
    rig.run(0.05)
    assert FaultCode.PILOT_BOARD_FAILSAFE in rig.m.active_faults
    rig.set_cause(1 << 4, present=False)
    rig.run(1.5)
    assert rig.m.active_faults == frozenset()
    assert rig.m.state is PilotState.OFFERING  # contactor was open: the session resumes


def test_diode_fault_refuses_to_close() -> None:
    rig = Rig()
    rig.ev.diode_ok = False
    rig.plug("2")
    rig.ev.cp = "3"
    rig.run(1.0)
    assert faults_raised(rig) == [FaultCode.DIODE_FAULT]
    assert CLOSE not in rig.actions_since(0.0) and rig.duty == 1000


def test_welded_contactor_keeps_the_lock_and_needs_a_reset() -> None:
    rig = charging_rig()
    rig.weld = True
    rig.ev.cp = "2"
    t = rig.now
    rig.run(1.0)
    assert faults_raised(rig) == [FaultCode.CONTACTOR_WELDED]
    assert rig.lock_coil  # the socket may be live: keep the plug in
    rig.ev.cp = "1"
    rig.run(1.0)
    assert FaultCode.CONTACTOR_WELDED in rig.m.active_faults  # unplug does not clear it
    rig.feed(ResetRequested())
    assert FaultCode.CONTACTOR_WELDED in rig.m.active_faults  # still welded
    rig.weld = False
    rig.run(0.05)
    rig.feed(ResetRequested())
    assert FaultCleared(FaultCode.CONTACTOR_WELDED) in rig.actions_since(t)
    assert rig.m.state is PilotState.IDLE


def test_contactor_that_does_not_close_is_a_fault_after_the_feedback_timeout() -> None:
    rig = Rig()
    rig.no_close = True
    rig.plug("3", settle=1.0)
    close_at = rig.first_time(CLOSE)
    raised = next(w for w, _, s in rig.log if FaultRaised in map(type, s.actions))
    assert close_at is not None and raised - close_at == pytest.approx(0.5, abs=0.011)
    assert faults_raised(rig) == [FaultCode.CONTACTOR_NO_CLOSE] and not rig.coil


def test_overcurrent_cuts_after_5s_and_before_10s() -> None:
    rig = charging_rig(hardware_rating_a=16.0)
    rig.ev.ignore_duty_a = 20.0  # > max(16 + 2, 16 * 1.1)
    onset = rig.now
    rig.run(11.0)
    [(when, pos)] = open_steps(rig, onset)
    assert 5.0 <= when - onset < 10.0 and pos == 0  # GB/T 34657.1 item 10
    assert faults_raised(rig) == [FaultCode.OVERCURRENT]


def test_overcurrent_spike_shorter_than_persistence_is_tolerated() -> None:
    rig = charging_rig(hardware_rating_a=16.0)
    rig.ev.ignore_duty_a = 25.0
    rig.run(3.0)
    rig.ev.ignore_duty_a = None
    rig.run(10.0)
    assert rig.coil and not faults_raised(rig)


def test_duty_cut_gives_the_vehicle_time_to_follow() -> None:
    rig = charging_rig(hardware_rating_a=32.0)
    rig.ev.ignore_duty_a = 31.0  # the EV keeps the old current for a while
    rig.feed(LimitChanged(10.0))
    rig.run(4.5)
    rig.ev.ignore_duty_a = None
    rig.run(10.0)
    assert rig.coil and not faults_raised(rig)


def test_overload_just_after_a_curtailment_is_cut_5_to_10_s_after_its_onset() -> None:
    rig = charging_rig(hardware_rating_a=32.0)
    rig.ev.ignore_duty_a = 20.0  # > max(16 + 2, 16 * 1.1), < the old 32 A offer
    onset = rig.now
    rig.feed(LimitChanged(16.0))  # the overload of the new offer starts with the curtailment
    rig.run(11.0)
    [(when, pos)] = open_steps(rig, onset)
    assert 5.0 <= when - onset < 10.0 and pos == 0  # GB/T 34657.1 item 10
    assert faults_raised(rig) == [FaultCode.OVERCURRENT]


def test_a_flapping_limit_does_not_extend_the_follow_window_forever() -> None:
    rig = charging_rig(hardware_rating_a=32.0)
    rig.ev.ignore_duty_a = 32.0  # the EV never follows the cuts
    onset = rig.now
    for i in range(120):  # the limit flaps 10/16 A every 100 ms for 12 s
        rig.feed(LimitChanged(10.0 if i % 2 == 0 else 16.0))
        rig.run(0.1)
        if not rig.coil:
            break
    [(when, pos)] = open_steps(rig, onset)
    assert 5.0 <= when - onset < 10.0 and pos == 0
    assert faults_raised(rig) == [FaultCode.OVERCURRENT]


def test_pilot_board_lost_opens_then_the_session_resumes_after_min_off() -> None:
    """A "cause gone" fault is a loss of sight, not a hazard at the vehicle: once it clears,
    the EV still in state 3 gets PWM back after min_off_s and the contactor closes again."""
    rig = charging_rig(min_off_s=60.0)
    rig.pilot_silent = True
    t = rig.now
    rig.run(0.1)
    when, pos = open_steps(rig, t)[0]
    assert pos == 0 and when - t <= 0.07
    assert faults_raised(rig) == [FaultCode.PILOT_BOARD_LOST]
    rig.pilot_silent = False
    rig.run(0.1)
    assert rig.m.active_faults == frozenset()
    assert rig.m.state is PilotState.CONNECTED and rig.m.authorised
    rig.run(when + 59.9 - rig.now)
    assert not rig.pwm and not rig.coil  # the minimum off time holds within the session
    rig.run(1.0)
    assert rig.pwm and rig.coil and rig.m.state is PilotState.CHARGING


def test_a_safety_fault_after_a_reset_still_needs_a_fresh_start() -> None:
    rig = charging_rig(min_off_s=5.0)
    rig.set_cause(1 << 0)  # RCD
    rig.run(0.1)
    rig.set_cause(1 << 0, present=False)
    rig.run(1.5)
    rig.feed(ResetRequested())
    rig.run(70.0)
    assert rig.m.active_faults == frozenset() and not rig.m.authorised
    assert not rig.pwm and not rig.coil  # never re-closed by itself
    rig.feed(Authorize("card-1"))
    rig.run(1.0)
    assert rig.coil and rig.m.id_tag == "card-1"


def test_frozen_sample_seq_is_a_fault() -> None:
    rig = charging_rig()
    rig.freeze = True
    rig.run(0.2)
    assert faults_raised(rig) == [FaultCode.PILOT_BOARD_FROZEN] and not rig.coil


def test_relay_board_lost_is_a_fault() -> None:
    rig = charging_rig()
    rig.relay_silent = True
    rig.run(1.1)
    assert faults_raised(rig) == [FaultCode.RELAY_BOARD_LOST] and not rig.coil


def test_meter_lost_charging_continues_within_grace_then_stops() -> None:
    rig = charging_rig()
    rig.meter_silent = True
    t = rig.now
    rig.run(9.0)
    assert rig.coil
    rig.run(2.0)
    [(when, _)] = open_steps(rig, t)
    assert 10.0 <= when - t <= 10.6
    assert faults_raised(rig) == [FaultCode.METER_LOST]


def test_meter_lost_while_idle_is_raised_only_when_charging_would_start() -> None:
    rig = Rig()
    rig.meter_silent = True
    rig.run(15.0)
    assert not faults_raised(rig)
    rig.plug("2")
    assert faults_raised(rig) == [FaultCode.METER_LOST] and not rig.pwm
    rig.meter_silent = False
    rig.run(1.0)
    assert rig.m.state is PilotState.OFFERING  # nothing had tripped: the session goes on


# --- authorisation, pause, anti-flap, lock ---------------------------------------------------


def test_remote_authorisation_then_stop_request() -> None:
    rig = Rig(PilotSettings(authorisation="remote"))
    rig.plug("3", settle=1.0)
    assert rig.m.state is PilotState.CONNECTED and not rig.pwm and not rig.lock_coil
    rig.feed(Authorize("tag"))
    rig.run(1.0)
    assert rig.coil
    t = rig.now
    rig.feed(StopRequested("user"))
    rig.run(2.0)
    assert open_steps(rig, t) and rig.m.state is PilotState.CONNECTED
    assert SessionEvent("charging_stopped", "user") in rig.actions_since(t)
    assert not rig.lock_coil  # the user may unplug


def test_authorize_without_a_vehicle_is_ignored() -> None:
    rig = Rig(PilotSettings(authorisation="remote"))
    rig.run(0.1)
    rig.feed(Authorize("early"))
    rig.plug("2")
    assert not rig.m.authorised and not rig.pwm


def test_pause_below_6a_then_resume_after_min_off() -> None:
    rig = charging_rig()
    t = rig.now
    rig.feed(LimitChanged(4.0))
    assert rig.duty == 1000 and rig.m.state is PilotState.PAUSING and rig.coil
    rig.run(1.0)  # the EV stops drawing (no PWM) -> open without waiting for the timeout
    [(opened, _)] = open_steps(rig, t)
    assert opened - t <= 1.0 and rig.m.state is PilotState.CONNECTED
    rig.feed(LimitChanged(16.0))
    rig.run(30.0)
    assert not rig.pwm  # anti-flap: min_off_s
    rig.run(31.0)
    closed = rig.first_time(CLOSE, t)
    assert closed is not None and closed - opened >= 60.0


def test_pause_opens_after_timeout_if_the_ev_keeps_drawing() -> None:
    rig = charging_rig()
    rig.ev.ignore_duty_a = 10.0
    t = rig.now
    rig.feed(LimitChanged(None))
    rig.feed(StopRequested("curtail"))
    rig.run(4.0)
    [(opened, _)] = open_steps(rig, t)
    assert opened - t == pytest.approx(3.0, abs=0.011)


def test_cycle_cap_per_hour_blocks_the_next_close() -> None:
    rig = charging_rig(max_cycles_per_hour=3)
    for _ in range(2):
        rig.ev.cp = "2"
        rig.run(0.2)
        rig.ev.cp = "3"
        rig.run(0.5)
    assert rig.m.state is PilotState.CHARGING
    rig.ev.cp = "2"
    rig.run(0.2)
    assert not rig.pwm and rig.m.state is PilotState.CONNECTED  # 3 closes used up
    rig.ev.cp = "3"
    rig.run(60.0)
    assert not rig.coil


def test_lock_not_confirmed_in_time_is_lock_failed_and_no_close() -> None:
    rig = Rig()
    rig.lock_stuck = True
    rig.plug("3", settle=2.0)
    assert faults_raised(rig) == [FaultCode.LOCK_FAILED]
    assert CLOSE not in rig.actions_since(0.0)


def test_cable_mode_uses_the_fixed_rating_and_no_lock() -> None:
    rig = Rig(PilotSettings(connection="cable", cable_rating_a=10.0, hardware_rating_a=32.0))
    rig.cc_ohm = 0xFFFF
    rig.plug("3", settle=0.5)
    assert rig.coil and rig.duty == 166 and not rig.lock_coil
    assert SetLock(True) not in rig.actions_since(0.0)


def test_cc_code_caps_the_offer() -> None:
    rig = Rig(PilotSettings(hardware_rating_a=63.0))
    rig.cc_ohm = 680  # 16 A cable
    rig.plug("2")
    assert rig.m.cable_rating_a == 16.0 and rig.duty == 266


def test_iec_state_d_is_refused_and_opens_when_charging() -> None:
    rig = charging_rig(profile=IEC61851)
    rig.ev.cp = "D"
    t = rig.now
    rig.run(0.1)
    assert open_steps(rig, t)[0][1] == 0
    assert rig.m.ev_level is CpLevel.STATE_D and rig.m.state is PilotState.OFFERING
    rig.run(5.0)
    assert not rig.coil and not faults_raised(rig)


def test_gb_profile_treats_3v_as_invalid() -> None:
    rig = charging_rig()
    rig.ev.cp = "D"
    rig.run(0.1)
    assert faults_raised(rig) == [FaultCode.CP_INVALID]


def test_reread_of_the_same_sample_does_not_count_twice() -> None:
    rig = charging_rig()
    rig.ev.cp = "2"
    rig.freeze = True
    for _ in range(5):
        rig.now += 0.01
        rig.feed(rig.pilot_event())
    assert rig.coil  # one new measurement only: not debounced yet


def test_next_deadline_covers_the_feedback_timeout() -> None:
    rig = Rig(PilotSettings(connection="cable", cable_rating_a=16.0))
    rig.plug("3", settle=0.05)
    close_at = rig.first_time(CLOSE)
    assert close_at is not None
    step = next(s for w, _, s in rig.log if w == close_at and CLOSE in s.actions)
    assert step.next_deadline is not None and step.next_deadline <= close_at + 0.5
