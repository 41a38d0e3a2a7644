"""Delivery: the rules that get the machine's commands onto real boards (pure, like the machine).

The session machine (``machine.py``) commands each change once and takes it as done. The boards
sit on serial buses that lose writes and return stale values; what to do then is decided here,
so the shell only pumps: it feeds what it read (``PilotSampled``, ``RelaySampled``, a whole
``MeterRead``), what failed (``ActionFailed``) and when the board's watchdog is due
(``HeartbeatDue``), and applies what comes back, in order. Rules, each with its reason:

- R1 open retry: a contactor open that did not reach the relay board is retried
  ``OPEN_RETRIES`` times at once, then re-sent as soon as the relay board answers again (GB/T
  18487.1 A.3.10: the supply opens when the pilot says so; the machine will not ask twice).
- R2 feedback hold: the machine times its welded check from the open it commanded, but the
  relay board gets that open only when its write is delivered: at once, or late (the bus's own
  retries, R1's retries, a re-send once the board answers). A closed mirror contact is
  therefore not judged (that ``RelaySampled`` does not reach the machine) while an open is on
  its way or undelivered, nor for ``contactor_feedback_timeout_s`` after it was delivered: the
  contacts get their full time, and a board that never got the open is never called welded.
  An open mirror contact always reaches the machine (it cannot raise a weld). Delivered is known
  at the next input that is not its ``ActionFailed`` (the shell applies a step's writes, and
  reports their failures, before it feeds the next input); that input's time is no earlier
  than the delivery, so a real weld is judged at most one input after delivery + timeout.
- R3 duty re-send: a duty write that failed, or a board that outputs another duty than
  commanded for ``DUTY_MISMATCH_POLLS`` samples (a write applied late, a board reset), gets the
  commanded duty written again once the pilot board answers. Not while the board's own
  watchdog holds +12 V (``BoardStatus.FAILSAFE``): the heartbeat is what clears that.
- R4 heartbeat: the board's watchdog is fed only while no duty re-send is pending, so a stale
  PWM duty is left to the watchdog, which then holds +12 V (no charging).
- R5 frozen meter: a meter that returns the very same whole reading ``METER_FROZEN_READS``
  times in a row while current flows has frozen (real readings jitter); its reads count as
  failed, so the machine's meter-lost grace and overcurrent check are not blinded.
- R6 notes: a change of the debounced EV level and of the mirror contact is reported once.

Every rule only ever adds an open or a duty the machine already commands: none can close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.pilot.classifier import CpLevel
from agent.pilot.events import (
    Action,
    BoardStatus,
    Event,
    MeterReadFailed,
    MeterSampled,
    PilotSampled,
    RelaySampled,
    ResetBoardFaults,
    SetContactor,
    SetDuty,
    SetLock,
)
from agent.pilot.machine import PilotMachine

__all__ = [
    "DUTY_MISMATCH_POLLS",
    "FROZEN_MIN_CURRENT_A",
    "METER_FROZEN_READS",
    "OPEN_RETRIES",
    "ActionFailed",
    "Delivered",
    "Delivery",
    "DutyMismatch",
    "EvLevelChanged",
    "FeedbackChanged",
    "Heartbeat",
    "HeartbeatDue",
    "Input",
    "MeterFrozen",
    "MeterRead",
    "Output",
    "Resend",
    "Write",
]

OPEN_RETRIES = 3
DUTY_MISMATCH_POLLS = 20  # ~200 ms of a board outputting another duty than commanded
METER_FROZEN_READS = 10  # identical readings in a row while current flows: a frozen meter
FROZEN_MIN_CURRENT_A = 1.0
_OPEN = SetContactor(False)
_FAILSAFE = int(BoardStatus.FAILSAFE)  # a plain int mask: ``&`` on the flag builds a flag object

# --- inputs beyond the machine's events ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeterRead:
    """One whole meter reading: the phase currents and every other value it returned."""

    current_a: tuple[float, ...]
    rest: tuple[object, ...] = ()  # voltages, power, energy, ...: compared whole (R5)


@dataclass(frozen=True, slots=True)
class HeartbeatDue:
    """The pilot board's watchdog period is up (R4)."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Feed the pilot board's watchdog."""


# --- outputs beyond the machine's actions ----------------------------------------------------

ResendReason = Literal["retry", "board_back", "duty_mismatch"]


@dataclass(frozen=True, slots=True)
class Resend:
    """Write ``action`` again (R1, R3); ``attempt`` counts immediate retries of an open."""

    action: SetContactor | SetDuty
    reason: ResendReason
    attempt: int = 0


Write = SetContactor | SetDuty | SetLock | ResetBoardFaults | Heartbeat | Resend


@dataclass(frozen=True, slots=True)
class ActionFailed:
    """The shell could not apply ``action`` (the board did not answer or refused)."""

    action: Write


@dataclass(frozen=True, slots=True)
class MeterFrozen:
    """R5 began: the meter's reads count as failed from now on."""

    reads: int


@dataclass(frozen=True, slots=True)
class DutyMismatch:
    """R3: the board outputs ``actual`` while ``commanded`` is commanded."""

    actual: int
    commanded: int


@dataclass(frozen=True, slots=True)
class EvLevelChanged:
    """The debounced EV level (CP state) changed; reported upstream as pilotStateChanged."""

    old: CpLevel | None
    new: CpLevel | None
    cp_mv: int


@dataclass(frozen=True, slots=True)
class FeedbackChanged:
    """The contactor's mirror contact changed (None: relay board unreadable)."""

    closed: bool | None


Input = Event | MeterRead | ActionFailed | HeartbeatDue
Output = Action | Heartbeat | Resend | MeterFrozen | DutyMismatch | EvLevelChanged | FeedbackChanged


@dataclass(frozen=True, slots=True)
class Delivered:
    """What one input asks of the shell: writes and notes in order, and when to call again."""

    actions: tuple[Output, ...]
    next_deadline: float | None


class Delivery:
    """The machine of one connector plus the rules R1-R6. Not thread-safe; one owner."""

    def __init__(self, machine: PilotMachine) -> None:
        self.machine = machine
        self._deadline: float | None = None
        self._open_pending = False  # R1: an open that has not reached the relay board
        self._duty_pending = False  # R3: the board's duty must be written again
        self._duty_why: ResendReason = "board_back"
        self._mismatch = 0
        self._hold_until = float("-inf")  # R2
        self._open_undelivered = False  # R2: an open failed and has not reached the board
        self._open_in_flight = False  # R2: an open was handed out, not yet known delivered
        self._meter_last: MeterRead | None = None
        self._frozen = 0
        self._cp_mv = 0
        self._ev_level: CpLevel | None = None
        self._feedback: bool | None = None

    @property
    def open_pending(self) -> bool:
        return self._open_pending

    @property
    def duty_pending(self) -> bool:
        return self._duty_pending

    def step(self, inp: Input, now: float) -> Delivered:
        """Feed one input at ``now``; the returned writes go to the boards in order."""
        out: list[Output] = []
        if self._open_in_flight and not isinstance(inp, ActionFailed):
            self._open_in_flight = self._open_undelivered = False  # R2: it was delivered
            self._hold_until = now + self.machine.settings.contactor_feedback_timeout_s
        match inp:
            case ActionFailed():
                self._failed(inp.action, out)
            case HeartbeatDue():
                out.append(self._duty_resend() if self._duty_pending else Heartbeat())
            case MeterRead():
                self._machine(self._meter(inp, out), now, out)
            case PilotSampled():
                self._cp_mv = inp.cp_high_mv
                self._check_duty(inp, out)
                self._machine(inp, now, out)
                if self._duty_pending:  # the board answers: write what is commanded now
                    out.append(self._duty_resend())
            case RelaySampled():
                if self._open_pending and not self.machine.contactor_commanded:
                    out.append(Resend(_OPEN, "board_back", OPEN_RETRIES))
                    self._open_pending, self._open_in_flight = False, True
                elif self._open_pending:  # the machine closes again: that open is moot
                    self._open_pending = False
                if self._not_judged(inp, now):
                    return Delivered(tuple(out), self._deadline)
                if inp.contactor_closed != self._feedback:
                    self._feedback = inp.contactor_closed
                    out.append(FeedbackChanged(inp.contactor_closed))
                self._machine(inp, now, out)
            case _:
                self._machine(inp, now, out)
        return Delivered(tuple(out), self._deadline)

    # --- the machine and what it commands --------------------------------------------------

    def _machine(self, event: Event, now: float, out: list[Output]) -> None:
        step = self.machine.step(event, now)
        self._deadline = step.next_deadline
        for action in step.actions:
            if isinstance(action, SetContactor):  # a fresh command supersedes any re-send
                self._open_pending = self._open_undelivered = False
                self._open_in_flight = action == _OPEN
            elif isinstance(action, SetDuty):
                self._duty_pending = False
        out.extend(step.actions)
        level = self.machine.ev_level  # None while the debouncer restarts after a gap
        if level is not None and level != self._ev_level:
            old, self._ev_level = self._ev_level, level
            out.append(EvLevelChanged(old, level, self._cp_mv))

    def _not_judged(self, s: RelaySampled, now: float) -> bool:
        """R2: a closed mirror contact while the open has not had its time on the board."""
        if self.machine.contactor_commanded or not s.contactor_closed:
            return False
        return self._open_undelivered or self._open_in_flight or now < self._hold_until

    # --- R1, R3: failed writes -------------------------------------------------------------

    def _failed(self, action: Write, out: list[Output]) -> None:
        attempt, reason = 0, None
        if isinstance(action, Resend):
            attempt, reason = action.attempt, action.reason
            action = action.action
        if isinstance(action, SetDuty):
            self._duty_pending, self._duty_why = True, "board_back"
        elif action == _OPEN and not self.machine.contactor_commanded:
            self._open_undelivered, self._open_in_flight = True, False
            if reason == "board_back":  # the board is still unreachable: wait for it again
                self._open_pending = True
            elif attempt < OPEN_RETRIES:
                out.append(Resend(_OPEN, "retry", attempt + 1))
                self._open_in_flight = True
            else:
                self._open_pending = True

    def _check_duty(self, s: PilotSampled, out: list[Output]) -> None:
        commanded = self.machine.duty_commanded
        if s.duty_actual == commanded or int(s.status) & _FAILSAFE:
            self._mismatch = 0
            return
        self._mismatch += 1
        if self._mismatch >= DUTY_MISMATCH_POLLS:
            self._mismatch = 0
            self._duty_pending, self._duty_why = True, "duty_mismatch"
            out.append(DutyMismatch(s.duty_actual, commanded))

    def _duty_resend(self) -> Resend:
        self._duty_pending = False  # an ActionFailed of the re-send sets it again
        return Resend(SetDuty(self.machine.duty_commanded), self._duty_why)

    # --- R5: the frozen meter --------------------------------------------------------------

    def _meter(self, r: MeterRead, out: list[Output]) -> Event:
        drawing = max(r.current_a, default=0.0) > FROZEN_MIN_CURRENT_A
        self._frozen = self._frozen + 1 if drawing and r == self._meter_last else 0
        self._meter_last = r
        if self._frozen >= METER_FROZEN_READS:
            if self._frozen == METER_FROZEN_READS:
                out.append(MeterFrozen(self._frozen))
            return MeterReadFailed()
        return MeterSampled(r.current_a)
