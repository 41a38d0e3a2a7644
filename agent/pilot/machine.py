"""The pure pilot session machine (GB/T 18487.1-2015 Annex A, supply side).

Rules of this module (after h11's ``_state.py``):

1. Pure: ``step(event, now) -> Step``. No I/O, no clock, no await, no logging. ``now`` is a
   monotonic time in seconds; a value older than the last one is treated as the last one.
2. State changes happen only through rows of ``agent.pilot.table.TABLE``. This file decides
   which trigger holds now (``_next_trigger``); the table decides where it leads.
3. Outputs are reconciled from the state after the rows ran (``_reconcile``): an open is always
   the first action of the step, a close always the last command, and a close is emitted only
   when ``_may_close`` holds at that moment.
4. Faults are evaluated before the triggers, so a fault seen in a step opens in that step.
   Any unexpected exception latches ``INTERNAL_ERROR`` and returns the safe outputs.

Decisions where the standard is silent: ``agent.pilot.table.DECISIONS`` (rendered in the doc).
"""

from __future__ import annotations

from agent.faults import FaultCode
from agent.pilot.classifier import (
    CONNECTED_LEVELS,
    CpLevel,
    classify,
    classify_cc,
)
from agent.pilot.events import (
    Action,
    Authorize,
    Event,
    FaultRaised,
    LimitChanged,
    MeterReadFailed,
    MeterSampled,
    OfferChanged,
    PilotSampled,
    RelaySampled,
    ResetBoardFaults,
    ResetRequested,
    SessionEvent,
    SetContactor,
    SetDuty,
    SetLock,
    StateChanged,
    Step,
    StopRequested,
)
from agent.pilot.facts import PilotFacts
from agent.pilot.profiles import (
    DUTY_STEADY_POSITIVE,
    current_to_duty,
    is_legal_pwm_duty,
)
from agent.pilot.settings import PilotSettings
from agent.pilot.table import LEVEL_TRIGGERS, TRANSITIONS, PilotState, Trigger

__all__ = ["PilotMachine", "PilotSettings"]

S = PilotState
_MAX_CHAIN = 12  # more rows than this in one step means a cycle in the table: a bug
_PWM_STATES = frozenset({S.OFFERING, S.CLOSING, S.CHARGING})
_VEHICLE_OPENS = frozenset({Trigger.CP_1, Trigger.CP_2, Trigger.CP_D})


class PilotMachine(PilotFacts):
    """One connector's control-pilot session machine. Not thread-safe; one owner task."""

    # --- the one entry point -------------------------------------------------------------

    def step(self, event: Event, now: float) -> Step:
        """Feed one event at time ``now``; returns the actions (in order) and the deadline."""
        if self._poisoned:
            return Step((), None)
        try:
            return self._step(event, now)
        except Exception as exc:  # h11-style latch: any bug ends in the safe state
            self._poisoned = True
            self._contactor.commanded = False
            self._duty = DUTY_STEADY_POSITIVE
            self._state = S.FAULT
            detail = f"{type(exc).__name__}: {exc}"
            self._faults.latch_internal(detail)
            return Step(
                (SetContactor(False), SetDuty(DUTY_STEADY_POSITIVE),
                 FaultRaised(FaultCode.INTERNAL_ERROR, detail)),
                None,
            )

    def _step(self, event: Event, now: float) -> Step:
        if self._last_now is None:
            for watch in (self._pilot, self._frozen, self._relay):
                watch.ok(now)
            self._contactor.commanded_at = self._lock.commanded_at = now
        now = max(now, self._last_now if self._last_now is not None else now)
        self._last_now = now
        notes: list[Action] = []
        self._why, self._by_vehicle = "", False
        self._faults.begin_step()
        self._on_event(event, now, notes)
        self._faults.evaluate(self, now, notes)
        self._run_triggers(now, notes)
        commands = self._reconcile(now, notes)
        return Step(commands + tuple(notes), self._next_deadline(now))

    # --- inputs ---------------------------------------------------------------------------

    def _on_event(self, event: Event, now: float, notes: list[Action]) -> None:
        match event:
            case PilotSampled():
                self._on_pilot(event, now, notes)
            case RelaySampled():
                self._relay.ok(now)
                self._faults.on_relay(self, event, now, notes)
                self._contactor.sample(event.contactor_closed)
                self._lock.sample(event.lock_engaged)
            case MeterSampled():
                self._meter_fail_since = None
                self._meter_a, self._meter_at = max(event.current_a, default=0.0), now
                self._oc.measure(self._meter_a if self._contactor.commanded else 0.0, now)
            case MeterReadFailed():
                if self._meter_fail_since is None:
                    self._meter_fail_since = now
            case LimitChanged():
                self._limit_a = event.limit_a
            case Authorize():
                if self._plugged:
                    self._authorised, self._tripped, self._id_tag = True, False, event.id_tag
            case StopRequested():
                self._authorised = False
                self._stop_reason = event.reason or "stop requested"
            case ResetRequested():
                self._faults.reset_requested(now)
            case _:
                pass  # Tick and read failures: the watchers see the passing time

    def _on_pilot(self, ev: PilotSampled, now: float, notes: list[Action]) -> None:
        if self._pilot.lost(now):  # after a gap, samples on either side must not add up
            self._levels.restart()
            self._cc.restart()
            self._diode_run = 0
        self._pilot.ok(now)
        self._status, self._temperature_c = int(ev.status), ev.temperature_c  # plain int bits
        self._cp_mv, self._duty_actual = ev.cp_high_mv, ev.duty_actual
        if ev.sample_seq == self._seq:
            return  # the same measurement read again: it must not count twice in a debounce
        self._seq = ev.sample_seq
        self._frozen.ok(now)
        pwm_on = self._pwm(ev.duty_actual)
        reading = classify(self._s.profile, ev.cp_high_mv, ev.cp_low_mv, pwm_on)
        self._last_level = reading.level
        self._diode_run = self._diode_run + 1 if reading.diode_fault else 0
        if self._s.connection == "socket":
            self._cc.feed(classify_cc(self._s.profile, ev.cc_ohm))
        if self._levels.feed(reading.level):
            self._on_level(reading.level, notes)

    def _on_level(self, level: CpLevel, notes: list[Action]) -> None:
        if level in CONNECTED_LEVELS and not self._plugged:
            self._plugged, self._tripped, self._id_tag = True, False, None
            self._fault_open = False
            self._authorised = self._s.authorisation == "auto"
            self._stop_reason = ""
            notes.append(SessionEvent("plugged"))
        elif level is CpLevel.STATE_1 and self._plugged:
            self._plugged = self._authorised = False
            self._id_tag = None
            self._antiflap.session_ended()
            notes.append(SessionEvent("unplugged"))

    # --- guards ---------------------------------------------------------------------------

    def _can_offer(self, now: float) -> bool:
        return self.wants_power() and not self._faults.active and self.pilot_fresh(now)

    def _may_start(self, now: float) -> bool:
        return self._can_offer(now) and self._antiflap.allows(now)

    def _may_close(self, now: float) -> bool:
        """Every condition of a contactor close (GB/T 18487.1 A.3.7, 3'), checked at once."""
        profile = self._s.profile
        duty = current_to_duty(profile, self.requested_current_a)
        return (
            self._state is S.CLOSING
            and self._levels.stable is CpLevel.STATE_3
            and self._last_level is CpLevel.STATE_3  # and no change has begun since
            and duty is not None
            and self._duty == duty
            and is_legal_pwm_duty(profile, self._duty)
            and self._duty_actual == self._duty
            and (self._s.connection == "cable" or self.lock_confirmed)
            and self._may_start(now)
        )

    # --- triggers and rows ----------------------------------------------------------------

    def _next_trigger(self, now: float) -> Trigger | None:
        level = self._levels.stable
        if self._faults.active and self._state is not S.FAULT:
            return Trigger.FAULT_RAISED
        if self._state is S.FAULT:
            return Trigger.FAULTS_CLEARED if not self._faults.active else None
        if level is not None and self._level_applied != (self._state, level):
            self._level_applied = (self._state, level)
            return LEVEL_TRIGGERS[level]
        state, closed = self._state, self._contactor.commanded
        if state is S.CLOSING and closed and self._contactor.confirmed:
            return Trigger.CONTACTOR_CONFIRMED
        if state in _PWM_STATES:
            keep = self._can_offer(now) if closed else self._may_start(now)
            if not keep:
                return Trigger.OFFER_LOST
        if state is S.CONNECTED and self._may_start(now):
            return Trigger.OFFER_READY
        if state is S.PAUSING:
            if closed and self._can_offer(now):
                return Trigger.OFFER_READY
            if not closed or now - self._pause_since >= self._s.pause_open_timeout_s or (
                self._meter_a is not None and self._meter_a < self._s.pause_open_current_a
                and self._meter_at > self._pause_since  # measured after the PWM stopped
            ):
                return Trigger.PAUSE_DONE
        return None

    def _run_triggers(self, now: float, notes: list[Action]) -> None:
        for _ in range(_MAX_CHAIN):
            trigger = self._next_trigger(now)
            if trigger is None:
                return
            row = TRANSITIONS.get((self._state, trigger))
            if row is None:
                continue  # an IGNORED (state, CP level) pair
            old, self._state = self._state, row.target
            if not self._why:  # the first row of the step says why an open happens
                self._why = self._reason(trigger)
                self._by_vehicle = trigger in _VEHICLE_OPENS and old in (S.CLOSING, S.CHARGING)
            if row.target is S.PAUSING:
                self._pause_since = now
            notes.append(StateChanged(old, row.target, self._cp_mv))
            if row.target is S.CHARGING and not self._charging:
                self._charging = True
                notes.append(SessionEvent("charging_started", self._id_tag or ""))
        raise RuntimeError(f"transition chain did not settle in {self._state}")

    def _reason(self, trigger: Trigger) -> str:
        if trigger is Trigger.FAULT_RAISED:
            return "fault " + ",".join(sorted(str(c) for c in self._faults.active))
        if trigger in (Trigger.OFFER_LOST, Trigger.PAUSE_DONE) and self._stop_reason:
            return self._stop_reason
        return str(trigger.value)

    # --- outputs --------------------------------------------------------------------------

    def _want_closed(self, now: float) -> bool:
        if self._faults.active:
            return False
        if self._state is S.CLOSING:
            return self._contactor.commanded or self._may_close(now)
        return self._state in (S.CHARGING, S.PAUSING) and self._contactor.commanded

    def _want_lock(self, now: float) -> bool:
        if self._s.connection != "socket":
            return False
        if FaultCode.CONTACTOR_WELDED in self._faults.active:
            return self._lock.commanded  # keep the plug in: the socket may be live
        if self._contactor.commanded:
            return self._lock.commanded
        session = self._plugged and self.authorised and self._state not in (S.IDLE, S.FAULT)
        if session and self._levels.stable in CONNECTED_LEVELS:
            return True
        opening = self._contactor.fb is not False or not self._contactor.fresh
        wait = min(self._s.contactor_feedback_timeout_s, self._s.lock_release_s)
        return self._lock.commanded and opening and now - self._contactor.commanded_at < wait

    def _reconcile(self, now: float, notes: list[Action]) -> tuple[Action, ...]:
        first: list[Action] = []
        rest: list[Action] = []
        closed = self._want_closed(now)
        if self._contactor.commanded and not closed:
            first.append(SetContactor(False))
            self._contactor.command(False, now)
            self._antiflap.opened(now, self._by_vehicle or not self._plugged)
            self._fault_open = bool(self._faults.active)
            self._oc.cut()
            if self._charging:
                self._charging = False
                notes.append(SessionEvent("charging_stopped", self._why or self._state.value))
        lock = self._want_lock(now)
        if lock != self._lock.commanded:
            self._lock.command(lock, now)
            rest.append(SetLock(lock))
        duty = DUTY_STEADY_POSITIVE
        if self._state in _PWM_STATES and not self._faults.active:
            duty = current_to_duty(self._s.profile, self.requested_current_a) or duty
        if duty != self._duty:
            self._duty = duty
            rest.append(SetDuty(duty))
            offered = self.offered_current_a
            self._oc.offer(offered or 0.0, now)
            notes.append(OfferChanged(offered))
        if self._faults.board_reset_due(self, now):
            rest.append(ResetBoardFaults())
        if closed and not self._contactor.commanded:
            self._contactor.command(True, now)
            self._antiflap.closed(now)
            self._fault_open = False
            rest.append(SetContactor(True))
        return tuple(first + rest)

    def _next_deadline(self, now: float) -> float | None:
        times: list[float | None] = [
            self._pilot.deadline, self._frozen.deadline, self._relay.deadline
        ]
        if not self._contactor.confirmed or self._lock.commanded:
            times.append(self._contactor.deadline)
        if self._lock.commanded and not self._lock.confirmed:
            times.append(self._lock.deadline)
        times.append(self._oc.deadline if self._contactor.commanded else None)
        if self._meter_fail_since is not None:
            times.append(self._meter_fail_since + self._s.meter_grace_s)
        if self._state is S.PAUSING:
            times.append(self._pause_since + self._s.pause_open_timeout_s)
        if self._state in (S.CONNECTED, S.OFFERING) and self._can_offer(now):
            times.append(self._antiflap.ready_at(now))
        times.append(self._faults.deadline(self, now))
        future = [t for t in times if t is not None and t > now]
        return min(future, default=None)
