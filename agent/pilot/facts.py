"""What the pilot machine knows: its inputs, commanded outputs and watchers, with read-only
views for the shell, the status command and ``FaultWatch``. No decisions are made here; those
are in ``machine.py`` (triggers, outputs) and ``faultwatch.py`` (faults).
"""

from __future__ import annotations

import math

from agent.faults import FAULTS, FaultCode
from agent.pilot.classifier import CcReading, CcState, CpLevel, Debouncer
from agent.pilot.events import Action, SetContactor, SetDuty, SetLock
from agent.pilot.faultwatch import FaultWatch
from agent.pilot.monitors import AntiFlap, Feedback, Liveness, Overcurrent
from agent.pilot.profiles import (
    DUTY_PWM_MAX,
    DUTY_PWM_MIN,
    DUTY_STEADY_POSITIVE,
    current_to_duty,
    duty_to_current,
)
from agent.pilot.settings import PilotSettings
from agent.pilot.table import PilotState

__all__ = ["PilotFacts"]

S = PilotState


class PilotFacts:
    """State of one connector's pilot core (base of ``PilotMachine``)."""
    def __init__(self, settings: PilotSettings) -> None:
        s = self._s = settings
        self._state = S.IDLE
        self._levels: Debouncer[CpLevel] = Debouncer(s.debounce_samples, dict(s.debounce_fast))
        self._cc: Debouncer[CcReading] = Debouncer(s.debounce_samples)
        self._diode_run = 0
        self._level_applied: tuple[PilotState, CpLevel] | None = None
        self._cp_mv = 0
        self._last_level: CpLevel | None = None  # of the newest sample, before debouncing
        self._duty_actual: int | None = None
        self._status = 0
        self._temperature_c: float | None = None
        self._seq: int | None = None
        self._last_now: float | None = None
        self._pilot = Liveness(s.pilot_lost_s)
        self._frozen = Liveness(s.pilot_frozen_s)
        self._relay = Liveness(s.relay_lost_s)
        self._meter_fail_since: float | None = None
        self._meter_a: float | None = None
        self._meter_at = float("-inf")
        self._contactor = Feedback(s.contactor_feedback_timeout_s)
        self._lock = Feedback(s.lock_timeout_s)
        self._duty = DUTY_STEADY_POSITIVE
        self._antiflap = AntiFlap(s.min_off_s, s.max_cycles_per_hour)
        self._oc = Overcurrent(
            s.overcurrent_abs_margin_a, s.overcurrent_rel_margin, s.overcurrent_persist_s,
            s.ev_follow_s,
        )
        self._limit_a: float | None = None
        self._plugged = False
        self._authorised = False
        self._id_tag: str | None = None
        self._tripped = False  # a safety fault cut this plug-in's charging: fresh start
        self._fault_open = False  # a fault opened the contactor; no close since
        self._charging = False  # "charging_started" announced
        self._stop_reason = ""
        self._pause_since = 0.0
        self._why = ""  # reason of this step's first transition, for "charging_stopped"
        self._by_vehicle = False  # this step's first transition was the EV opening (S2/plug)
        self._faults = FaultWatch(s)
        self._poisoned = False


    # --- read-only view for the shell ----------------------------------------------------

    @property
    def settings(self) -> PilotSettings:
        return self._s

    @property
    def state(self) -> PilotState:
        return self._state

    @property
    def ev_level(self) -> CpLevel | None:
        """The debounced CP level (None before the first stable one)."""
        return self._levels.stable

    @property
    def level_settled(self) -> bool:
        """The newest sample's level is the debounced one: no CP change is being debounced."""
        return self._last_level is not None and self._last_level == self._levels.stable

    @property
    def active_faults(self) -> frozenset[FaultCode]:
        return self._faults.active

    @property
    def offered_current_a(self) -> float | None:
        """What the PWM advertises now (None: no PWM)."""
        return duty_to_current(self._s.profile, self._duty) if self._pwm(self._duty) else None

    @property
    def duty_commanded(self) -> int:
        return self._duty

    @property
    def contactor_commanded(self) -> bool:
        return self._contactor.commanded

    @property
    def contactor_confirmed(self) -> bool:
        return self._contactor.confirmed

    @property
    def lock_commanded(self) -> bool:
        return self._lock.commanded

    @property
    def lock_confirmed(self) -> bool:
        return self._lock.commanded and self._lock.confirmed

    @property
    def authorised(self) -> bool:
        return self._authorised and not self._tripped

    @property
    def id_tag(self) -> str | None:
        return self._id_tag

    @property
    def cable_rating_a(self) -> float | None:
        """Socket: the debounced CC code's rating (None if not valid); cable: the fixed one."""
        if self._s.connection == "cable":
            return self._s.cable_rating_a
        cc = self._cc.stable
        return cc.rating_a if cc is not None and cc.state is CcState.VALID else None

    @property
    def temperature_c(self) -> float | None:
        return self._temperature_c

    @property
    def requested_current_a(self) -> float:
        """min(hardware, cable, external limit, profile cap); 0 when the cable is not valid."""
        caps = [self._s.hardware_rating_a, self._s.profile.max_current_a]
        caps.append(self.cable_rating_a or 0.0)
        if self._limit_a is not None:
            caps.append(self._limit_a if math.isfinite(self._limit_a) else 0.0)
        return max(0.0, min(caps))

    def safe_state_actions(self) -> tuple[Action, ...]:
        """What the shell applies at start-up, before the first step."""
        return (SetContactor(False), SetDuty(DUTY_STEADY_POSITIVE), SetLock(False))


    # --- guards shared with FaultWatch ----------------------------------------------------

    @staticmethod
    def _pwm(duty: int | None) -> bool:
        return duty is not None and DUTY_PWM_MIN <= duty <= DUTY_PWM_MAX

    def pilot_fresh(self, now: float) -> bool:
        return not self._pilot.lost(now) and not self._frozen.lost(now)

    def meter_lost(self, now: float) -> bool:
        since = self._meter_fail_since
        return since is not None and now - since >= self._s.meter_grace_s

    def wants_power(self) -> bool:
        """The session would advertise a current if nothing were wrong."""
        return (
            self._plugged and self.authorised and self.cable_rating_a is not None
            and current_to_duty(self._s.profile, self.requested_current_a) is not None
        )

    # --- used by FaultWatch ---------------------------------------------------------------

    def fault_tripped(self, code: FaultCode) -> None:
        """A fault appeared. A safety fault (not "cause gone") that meets charging - the
        contactor closed, or opened by a fault and not closed since (a fault seen only once
        a silent board answers again) - ends this plug-in's charging: a fresh start is needed.
        A "cause gone" fault does not: once it clears, the offer returns after min_off_s."""
        if FAULTS[code].safety and (self._contactor.commanded or self._fault_open):
            self._tripped = True

    @property
    def status_bits(self) -> int:
        return self._status

    @property
    def diode_bad(self) -> bool:
        return self._diode_run >= self._s.debounce_samples

    @property
    def cc_stable(self) -> CcReading | None:
        return self._cc.stable

    @property
    def plugged(self) -> bool:
        return self._plugged

    @property
    def contactor(self) -> Feedback:
        return self._contactor

    @property
    def lock(self) -> Feedback:
        return self._lock

    @property
    def overcurrent(self) -> Overcurrent:
        return self._oc

    @property
    def liveness(self) -> tuple[Liveness, Liveness, Liveness]:
        return self._pilot, self._frozen, self._relay

