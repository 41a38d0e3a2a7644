"""Hypothesis stateful tests: random event sequences and time steps against the safety rules.

The checks use a model built only from the emitted actions and the fed events (what the
shell would see), not the machine's own bookkeeping:

(a) ``SetContactor(True)`` only when, at that moment: the debounced CP level is state 3, the
    board echoes a PWM duty that is legal and equal to the duty for the requested current
    (>= 6 A), the cable is valid, the session is authorised, the lock is confirmed (socket) and
    no fault is active;
(b) a step that raises a fault opens first (if closed) and ends without PWM; no close and no
    PWM duty while any fault is active;
(c) when the CP level leaves state 3 while closed, the open is the first action of that step;
(d) the model's contactor, duty, lock and fault set equal the machine's.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from test_pilot_rig import Rig

from agent.faults import FaultCode
from agent.pilot import (
    GBT18487_2015,
    IEC61851,
    Authorize,
    CpLevel,
    Event,
    FaultCleared,
    FaultRaised,
    LimitChanged,
    MeterReadFailed,
    MeterSampled,
    PilotReadFailed,
    PilotSampled,
    PilotSettings,
    RelayReadFailed,
    RelaySampled,
    ResetRequested,
    SetContactor,
    SetDuty,
    SetLock,
    Step,
    StopRequested,
    Tick,
    classify,
    current_to_duty,
    is_legal_pwm_duty,
)
from agent.pilot.profiles import DUTY_PWM_MAX, DUTY_PWM_MIN

OPEN, CLOSE = SetContactor(False), SetContactor(True)


def is_pwm(duty: int) -> bool:
    return DUTY_PWM_MIN <= duty <= DUTY_PWM_MAX


class CheckedRig(Rig):
    """A rig whose every step is checked against the safety rules."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.model_closed = False
        self.model_duty = 1000
        self.model_lock = False
        self.model_lock_confirmed = False
        self.model_faults: set[FaultCode] = set()
        self.last_pilot: PilotSampled | None = None
        self.closes = 0

    def feed(self, event: Event) -> Step:
        m = self.m
        closed_before, level_before = self.model_closed, m.ev_level
        if isinstance(event, PilotSampled):
            self.last_pilot = event
        if isinstance(event, RelaySampled) and self.model_lock:
            self.model_lock_confirmed = event.lock_engaged
        step = super().feed(event)
        acts = step.actions
        raised = [a.code for a in acts if isinstance(a, FaultRaised)]
        assert FaultCode.INTERNAL_ERROR not in raised, acts
        assert not set(raised) & self.model_faults, "a fault is raised once"
        self.model_faults |= set(raised)
        self.model_faults -= {a.code for a in acts if isinstance(a, FaultCleared)}
        if OPEN in acts:
            assert acts.index(OPEN) == 0, acts
            self.model_closed = False
        for a in acts:
            if isinstance(a, SetDuty):
                assert a.duty == 1000 or is_legal_pwm_duty(m.settings.profile, a.duty), a
                self.model_duty = a.duty
            elif isinstance(a, SetLock):
                self.model_lock, self.model_lock_confirmed = a.locked, False
        if CLOSE in acts:
            self.check_close()
            self.model_closed = True
            self.closes += 1
        if raised:  # (b)
            assert not closed_before or acts[0] == OPEN, acts
            assert not is_pwm(self.model_duty)
        if self.model_faults:
            assert CLOSE not in acts and not is_pwm(self.model_duty)
        if closed_before and level_before is CpLevel.STATE_3 and m.ev_level is not level_before:
            assert acts[0] == OPEN, acts  # (c)
        # (d)
        assert self.model_closed == m.contactor_commanded
        assert self.model_duty == m.duty_commanded
        assert self.model_lock == m.lock_commanded
        assert self.model_faults == set(m.active_faults)
        assert step.next_deadline is None or step.next_deadline > self.now
        return step

    def check_close(self) -> None:  # (a)
        m, s = self.m, self.m.settings
        sample = self.last_pilot
        assert sample is not None
        assert m.ev_level is CpLevel.STATE_3
        pwm_on = is_pwm(sample.duty_actual)
        assert classify(s.profile, sample.cp_high_mv, sample.cp_low_mv, pwm_on).level is (
            CpLevel.STATE_3
        )
        assert sample.duty_actual == self.model_duty
        assert is_legal_pwm_duty(s.profile, self.model_duty)
        assert m.requested_current_a >= 6.0
        assert self.model_duty == current_to_duty(s.profile, m.requested_current_a)
        assert m.cable_rating_a is not None and m.authorised
        if s.connection == "socket":
            assert self.model_lock and self.model_lock_confirmed
        assert not self.model_faults


CP = st.sampled_from(["1", "2", "3", "3", "D", "short", "invalid"])
CC = st.sampled_from([220, 220, 680, 1500, 100, 0xFFFF, 0, 3500, 2000])
DT = st.sampled_from([0.005, 0.01, 0.01, 0.02, 0.05, 0.3, 1.0, 3.5, 6.0, 61.0])
BITS = st.sampled_from([1 << i for i in range(6)])


class PilotSafety(RuleBasedStateMachine):
    rig: CheckedRig

    @initialize(
        profile=st.sampled_from([GBT18487_2015, IEC61851]),
        connection=st.sampled_from(["socket", "cable"]),
        auth=st.sampled_from(["auto", "remote"]),
        hw=st.sampled_from([10.0, 16.0, 32.0, 63.0, 80.0]),
        debounce=st.integers(1, 3),
        precharge=st.booleans(),
    )
    def setup(
        self, profile: object, connection: str, auth: str, hw: float, debounce: int,
        precharge: bool,
    ) -> None:
        s = PilotSettings(
            profile=profile,  # type: ignore[arg-type]
            connection=connection,  # type: ignore[arg-type]
            cable_rating_a=32.0 if connection == "cable" else None,
            authorisation=auth,  # type: ignore[arg-type]
            hardware_rating_a=hw,
            debounce_samples=debounce,
            max_cycles_per_hour=5,
        )
        self.rig = CheckedRig(s)
        if precharge:  # start half of the runs in a charging session: faults then hit closed
            self.rig.ev.cp = "3"
            self.rig.run(0.3)
            self.rig.feed(Authorize("tag"))
            self.rig.run(0.3)

    @rule(polls=st.integers(5, 100))
    def charge(self, polls: int) -> None:
        self.rig.ev.cp = "3"
        self.rig.run(0.01 * polls)

    @rule(n=st.integers(1, 30))
    def poll(self, n: int) -> None:
        self.rig.run(0.01 * n)

    @rule(dt=DT)
    def tick(self, dt: float) -> None:
        self.rig.now += dt
        self.rig.feed(Tick())

    @rule(cp=CP, polls=st.integers(0, 5))
    def vehicle(self, cp: str, polls: int) -> None:
        self.rig.ev.cp = cp
        self.rig.run(0.01 * polls)

    @rule(ohm=CC)
    def cable(self, ohm: int) -> None:
        self.rig.cc_ohm = ohm

    @rule(
        name=st.sampled_from(
            ["weld", "no_close", "lock_stuck", "freeze", "pilot_silent", "relay_silent",
             "meter_silent"]
        ),
        on=st.booleans(),
    )
    def injection(self, name: str, on: bool) -> None:
        setattr(self.rig, name, on)

    @rule(ok=st.booleans())
    def diode(self, ok: bool) -> None:
        self.rig.ev.diode_ok = ok

    @rule(bit=BITS, on=st.booleans())
    def board_cause(self, bit: int, on: bool) -> None:
        self.rig.set_cause(bit, on)

    @rule(amps=st.none() | st.sampled_from([20.0]) | st.floats(0.0, 100.0))
    def overdraw(self, amps: float | None) -> None:
        self.rig.ev.ignore_duty_a = amps

    @rule(
        event=st.one_of(
            st.builds(LimitChanged, st.none() | st.floats(0.0, 100.0)),
            st.builds(Authorize, st.none() | st.just("tag")),
            st.builds(StopRequested, st.just("stop")),
            st.just(ResetRequested()),
            st.just(PilotReadFailed()),
            st.just(RelayReadFailed()),
            st.just(MeterReadFailed()),
            st.builds(MeterSampled, st.tuples(st.floats(0.0, 100.0))),
            st.builds(RelaySampled, st.booleans(), st.booleans()),
        )
    )
    def command(self, event: Event) -> None:
        self.rig.feed(event)

    @rule(
        high=st.integers(-13000, 13000),
        low=st.integers(-13000, 13000),
        duty=st.sampled_from([1000, 0, 100, 266, 533, 850, 892, 960]),
        seq=st.integers(0, 0xFFFF),
    )
    def raw_sample(self, high: int, low: int, duty: int, seq: int) -> None:
        r = self.rig
        r.feed(PilotSampled(high, low, duty, r.cc_ohm, r.status, seq, 30.0))

    @precondition(lambda self: hasattr(self, "rig"))
    @invariant()
    def no_internal_error(self) -> None:
        assert FaultCode.INTERNAL_ERROR not in self.rig.m.active_faults


class HealthySession(RuleBasedStateMachine):
    """Fewer injections, so that long charging stretches (and their opens) are common."""

    rig: CheckedRig

    @initialize(connection=st.sampled_from(["socket", "cable"]))
    def setup(self, connection: str) -> None:
        self.rig = CheckedRig(
            PilotSettings(
                connection=connection,  # type: ignore[arg-type]
                cable_rating_a=16.0 if connection == "cable" else None,
                min_off_s=5.0,
            )
        )

    @rule(cp=st.sampled_from(["1", "2", "3", "3", "3"]), polls=st.integers(1, 60))
    def vehicle(self, cp: str, polls: int) -> None:
        self.rig.ev.cp = cp
        self.rig.run(0.01 * polls)

    @rule(amps=st.none() | st.floats(0.0, 40.0))
    def limit(self, amps: float | None) -> None:
        self.rig.feed(LimitChanged(amps))

    @rule(seconds=st.sampled_from([0.5, 2.0, 6.0]))
    def wait(self, seconds: float) -> None:
        self.rig.run(seconds, dt=0.05)

    @rule()
    def reset(self) -> None:
        self.rig.feed(ResetRequested())


TestPilotSafety = PilotSafety.TestCase
TestPilotSafety.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHealthySession = HealthySession.TestCase
TestHealthySession.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
