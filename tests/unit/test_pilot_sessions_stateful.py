"""Hypothesis stateful test of session boundaries (issue 9), on top of the safety checks of
``test_pilot_stateful.CheckedRig`` (every step: close guards, open first, no PWM in a fault).

Random sessions with pauses by limit, EV stops, faults of every clear policy, causes that
come and go, resets, and unplug/replug at several delays. Checked:

(a) after an unplug, with every cause gone, the next plug-in gets its PWM offer within the time
    a fresh machine takes (the previous session's minimum off time does not hold it back);
(b) within one session ``min_off_s`` still holds: a close after an open that the vehicle did
    not cause (it still read state 3) comes ``min_off_s`` later at the earliest, unless the
    connector was unplugged in between;
(c) every fault path ends with the contactor open and the pilot not offering;
(d) a fault that clears by itself ("cause gone": a board or the meter silent or frozen, the
    board's failsafe) with the vehicle still plugged in (state 2 or 3) does not end the
    session: PWM is offered again by min_off_s + one poll after the fault's open, or in the
    normal offer time after the clear, whichever is later (no pause or stop in force).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from test_pilot_sessions import (
    BITS,
    CAUSE_GONE,
    LOSSES,
    UNPLUG_OR_RESET,
    cause,
    first_pwm,
    lose,
    normal_offer_delay,
)
from test_pilot_stateful import CheckedRig

from agent.faults import FaultCode
from agent.pilot import (
    Authorize,
    CpLevel,
    Event,
    FaultCleared,
    LimitChanged,
    PilotSettings,
    PilotState,
    ResetRequested,
    SessionEvent,
    SetContactor,
    Step,
    StopRequested,
)

OPEN, CLOSE = SetContactor(False), SetContactor(True)
UNPLUGGED = SessionEvent("unplugged")
EPS = 1e-9


class SessionRig(CheckedRig):
    """Adds check (b) to every step."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.our_open_at: float | None = None  # last open with the vehicle still at state 3
        self.unplugged_since_open = False

    def feed(self, event: Event) -> Step:
        step = super().feed(event)
        acts = step.actions
        if UNPLUGGED in acts:
            self.unplugged_since_open = True
        if CLOSE in acts and self.our_open_at is not None and not self.unplugged_since_open:
            assert self.now - self.our_open_at >= self.m.settings.min_off_s - EPS, acts  # (b)
        if OPEN in acts:
            ours = self.m.ev_level is CpLevel.STATE_3
            self.our_open_at = self.now if ours else None
            self.unplugged_since_open = False
        return step


class SessionBoundaries(RuleBasedStateMachine):
    rig: SessionRig
    normal_s: float
    limit: float | None

    @initialize(
        connection=st.sampled_from(["socket", "cable"]),
        min_off=st.sampled_from([5.0, 20.0]),
    )
    def setup(self, connection: str, min_off: float) -> None:
        s = PilotSettings(
            connection=connection,  # type: ignore[arg-type]
            cable_rating_a=16.0 if connection == "cable" else None,
            hardware_rating_a=16.0,
            min_off_s=min_off,
            max_cycles_per_hour=1000,  # the hourly cap is an example test of its own
        )
        self.rig = SessionRig(s)
        self.normal_s = normal_offer_delay(s)
        self.limit = None
        self.rig.plug("3", settle=0.5)

    # --- the vehicle and the limits --------------------------------------------------------

    @rule(polls=st.integers(5, 100))
    def charge(self, polls: int) -> None:
        if self.rig.ev.cp not in ("short", "invalid"):
            self.rig.ev.cp = "3"
        self.rig.run(0.01 * polls)

    @rule(polls=st.integers(2, 50))
    def ev_stops(self, polls: int) -> None:
        if self.rig.ev.cp == "3":
            self.rig.ev.cp = "2"
        self.rig.run(0.01 * polls)

    @rule(amps=st.sampled_from([None, 4.0, 10.0, 16.0]))
    def limit_changes(self, amps: float | None) -> None:
        self.limit = amps
        self.rig.feed(LimitChanged(amps))

    @rule()
    def stop_request(self) -> None:
        self.rig.feed(StopRequested("stop"))

    @rule()
    def authorize(self) -> None:
        self.rig.feed(Authorize(None))

    @rule(seconds=st.sampled_from([0.3, 1.0, 3.0, 6.0, 21.0]))
    def wait(self, seconds: float) -> None:
        self.rig.run(seconds, dt=0.05 if seconds > 3 else 0.01)

    # --- faults ----------------------------------------------------------------------------

    @rule(code=st.sampled_from(UNPLUG_OR_RESET), seconds=st.sampled_from([0.1, 1.0, 7.0]))
    def fault(self, code: FaultCode, seconds: float) -> None:
        cause(self.rig, code, True)
        self.rig.run(seconds)

    @rule(code=st.sampled_from(UNPLUG_OR_RESET))
    def cause_gone(self, code: FaultCode) -> None:
        if code in (FaultCode.CP_SHORT, FaultCode.CP_INVALID):
            if self.rig.ev.cp in ("short", "invalid"):
                self.rig.ev.cp = "2"  # the short or bad level is gone, the vehicle still there
        else:
            cause(self.rig, code, False)

    @rule(code=st.sampled_from(CAUSE_GONE), cp=st.sampled_from(["2", "3"]))
    def board_hiccup(self, code: FaultCode, cp: str) -> None:  # "cause gone" faults
        r = self.rig
        offering = (
            r.pwm and not r.m.active_faults and self.causes_gone() and r.ev.cp in ("2", "3")
        )
        t = r.now
        lose(r, code, True)
        r.run(LOSSES[code][1])
        lose(r, code, False)
        if r.ev.cp in ("2", "3"):
            r.ev.cp = cp  # the vehicle holds state 3, or opened S2 meanwhile
        for _ in range(30):  # the board's latched failsafe bit waits for its fault_reset
            r.run(0.1)
            if not r.m.active_faults:
                break
        if not offering:
            return
        assert r.m.active_faults == frozenset(), r.m.active_faults
        cleared = max(when for when, _, step in r.log if when >= t and any(
            isinstance(a, FaultCleared) for a in step.actions))
        opened = r.first_time(OPEN, t)
        poll = 0.01
        bound = max(cleared + self.normal_s, (t if opened is None else opened)
                    + r.settings.min_off_s + poll)
        if r.now < bound:
            r.run(bound - r.now + poll)
        at = first_pwm(r, cleared)
        assert at is not None and at <= bound + EPS, (code, r.m.state, r.m.authorised)  # (d)

    @rule(on=st.booleans())
    def weld(self, on: bool) -> None:  # "reset only"
        self.rig.weld = on

    @rule()
    def reset(self) -> None:
        self.rig.feed(ResetRequested())

    # --- the session boundary --------------------------------------------------------------

    def causes_gone(self) -> bool:
        """Nothing would stop a fresh machine from offering (board bits may still be latched
        in the board until its next fault_reset)."""
        r = self.rig
        return (
            r.status_cause == 0 and r.cc_ohm == 220 and not r.weld
            and not (r.no_close or r.lock_stuck or r.freeze or r.pilot_silent)
            and not (r.relay_silent or r.meter_silent)
            and r.ev.diode_ok and r.ev.ignore_duty_a is None  # a shorted diode shows only
            # under PWM: offered again after a reset, it trips again (not "gone")
            and FaultCode.CONTACTOR_WELDED not in r.m.active_faults  # needs a reset
            and (self.limit is None or self.limit >= 6.0)
        )

    @rule(
        unplugged_s=st.sampled_from([0.05, 0.5, 2.0, 10.0]),
        cp=st.sampled_from(["2", "3"]),
        repaired=st.booleans(),
    )
    def unplug_and_replug(self, unplugged_s: float, cp: str, repaired: bool) -> None:
        r = self.rig
        if repaired:  # every board-side cause goes away as the driver unplugs
            for code in BITS:
                cause(r, code, False)
            r.cc_ohm, r.no_close, r.lock_stuck = 220, False, False
        gone = r.now
        r.ev.cp = "1"  # the next vehicle may be another one: its own diode, its own draw
        r.ev.diode_ok, r.ev.ignore_duty_a = True, None
        r.run(unplugged_s)
        check = self.causes_gone()
        latched = r.settings.board_reset_interval_s if r.status else 0.0
        plugged = r.now
        r.plug(cp, settle=latched + self.normal_s + 0.2)
        if check:  # (a)
            at = first_pwm(r, plugged)
            assert at is not None, (r.m.state, r.m.active_faults)
            assert at - max(plugged, gone + latched) <= self.normal_s + EPS

    # --- (c) -------------------------------------------------------------------------------

    @precondition(lambda self: hasattr(self, "rig"))
    @invariant()
    def a_fault_ends_open_and_without_pwm(self) -> None:
        m = self.rig.m
        if m.active_faults:
            assert m.state is PilotState.FAULT
            assert not self.rig.coil and not m.contactor_commanded
            assert not self.rig.pwm and m.offered_current_a is None
        assert FaultCode.INTERNAL_ERROR not in m.active_faults


assert set(BITS) <= set(UNPLUG_OR_RESET)

TestSessionBoundaries = SessionBoundaries.TestCase
TestSessionBoundaries.settings = settings(
    max_examples=80, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
