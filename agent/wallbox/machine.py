"""The session machine of a retrofitted wallbox: pure, like ``agent.pilot.PilotMachine``.

The wallbox runs its own pilot and contactor; this machine only turns its state values into the
agent's connector state, session milestones and faults, and decides the current command (the
composite limit, or the disable path while not allowed). It answers the same questions the
orderly layer asks a pilot machine (``state``, ``ev_level``, ``offered_current_a``,
``contactor_commanded`` ...), so sessions, limits, events and telemetry do not know which
hardware is underneath.

Rules:

- Only ``step(event, now)``; no I/O, no clock. ``now`` is monotonic seconds.
- A decrease of the command is the first action of its step, an increase the last.
- Faults (lost, out-of-table state, the wallbox's own error) pause charging through the disable
  path and clear by themselves once their cause has gone (the wallbox keeps its own safety).
- Any unexpected exception latches ``INTERNAL_ERROR`` and commands the disable path.
- Each command change is commanded once and taken as done; getting it onto a wallbox that
  loses writes or resets (re-sends, reprogramming) is ``agent.wallbox.delivery``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.faults import FaultCode
from agent.pilot.classifier import CONNECTED_LEVELS, CpLevel
from agent.pilot.events import (
    Authorize,
    FaultCleared,
    FaultRaised,
    LimitChanged,
    OfferChanged,
    ResetRequested,
    SessionEvent,
    SetContactor,
    StateChanged,
    StopRequested,
    Tick,
)
from agent.pilot.table import PilotState
from agent.wallbox.mapping import (
    DISABLED,
    FAULT_STATES,
    LEVELS,
    command_amps,
    command_for,
    describe_value,
    vehicle_state,
)
from drivers.wallbox.profiles import WallboxCommand, WallboxProfile

S = PilotState
_OWN_FAULTS = (FaultCode.WALLBOX_LOST, FaultCode.WALLBOX_STATE_INVALID, FaultCode.WALLBOX_FAULT)


@dataclass(frozen=True, slots=True)
class WallboxSampled:
    """One read of the wallbox's state register, decoded to its table key."""

    value: int


@dataclass(frozen=True, slots=True)
class WallboxReadFailed:
    """The state read failed (timeout, exception, garbled answer)."""


@dataclass(frozen=True, slots=True)
class WriteCommand:
    """Write the current register / disable path (``drivers.wallbox.WallboxDriver.apply``);
    ``force``: every register of the command, even those the driver believes hold it (a
    re-send, ``agent.wallbox.delivery`` W1/W2; the machine itself never forces)."""

    command: WallboxCommand
    force: bool = False


WallboxEvent = (WallboxSampled | WallboxReadFailed | LimitChanged | Authorize | StopRequested
                | ResetRequested | Tick)
WallboxAction = (WriteCommand | StateChanged | FaultRaised | FaultCleared | OfferChanged
                 | SessionEvent | SetContactor)


@dataclass(frozen=True, slots=True)
class WallboxStep:
    actions: tuple[WallboxAction, ...]
    next_deadline: float | None


@dataclass(frozen=True, slots=True)
class WallboxSettings:
    profile: WallboxProfile
    rated_current_a: float
    authorisation: Literal["auto", "remote"] = "auto"
    lost_s: float = 3.0


class WallboxMachine:
    """One wallbox connector. Not thread-safe; one owner task."""

    def __init__(self, settings: WallboxSettings) -> None:
        self.settings = settings
        self.profile = settings.profile
        self._state = S.IDLE
        self._level: CpLevel | None = None
        self._limit: float | None = None  # as PilotMachine: the services feed the composite
        self._command = DISABLED
        self._faults: dict[FaultCode, str] = {}
        self._plugged = False
        self._authorised = False
        self._stopped = False
        self._stop_reason = ""
        self._id_tag: str | None = None
        self._last_ok: float | None = None
        self._last_now: float | None = None
        self._poisoned = False
        self.last_value: int | None = None

    # --- what the orderly layer reads (the same names as PilotMachine) ------------------------

    @property
    def state(self) -> PilotState:
        return self._state

    @property
    def ev_level(self) -> CpLevel | None:
        return self._level

    @property
    def offered_current_a(self) -> float | None:
        if self._state in (S.OFFERING, S.CHARGING):
            return command_amps(self.profile, self._command)
        return None

    @property
    def contactor_commanded(self) -> bool:
        """The wallbox closes its own contactor: charging allowed and the vehicle asking."""
        return self._state is S.CHARGING

    @property
    def cable_rating_a(self) -> float | None:
        return None  # the wallbox reads its own cable (PP) and limits by it

    @property
    def authorised(self) -> bool:
        return self._authorised

    @property
    def active_faults(self) -> frozenset[FaultCode]:
        return frozenset(self._faults)

    @property
    def temperature_c(self) -> float | None:
        return None

    @property
    def command(self) -> WallboxCommand:
        return self._command

    def safe_state_command(self) -> WallboxCommand:
        """What start-up and exit write: paused until the composite says otherwise."""
        return DISABLED

    # --- the one entry point -------------------------------------------------------------

    def step(self, event: WallboxEvent, now: float) -> WallboxStep:
        if self._poisoned:
            return WallboxStep((), None)
        try:
            return self._step(event, now)
        except Exception as exc:
            self._poisoned = True
            detail = f"{type(exc).__name__}: {exc}"
            self._faults[FaultCode.INTERNAL_ERROR] = detail
            self._command, self._state = DISABLED, S.FAULT
            return WallboxStep((WriteCommand(DISABLED),
                                FaultRaised(FaultCode.INTERNAL_ERROR, detail)), None)

    def _step(self, event: WallboxEvent, now: float) -> WallboxStep:
        if self._last_now is None:
            self._last_ok = now  # the lost timer starts with the machine
        now = max(now, self._last_now if self._last_now is not None else now)
        self._last_now = now
        notes: list[WallboxAction] = []
        match event:
            case WallboxSampled():
                self._on_sample(event.value, now, notes)
            case WallboxReadFailed() | Tick():
                self._check_lost(now, notes)
            case LimitChanged():
                self._limit = event.limit_a
            case Authorize():
                self._authorised, self._stopped, self._id_tag = True, False, event.id_tag
            case StopRequested():
                self._stopped, self._stop_reason = True, event.reason or "stop requested"
            case ResetRequested():
                pass  # every wallbox fault clears by itself once its cause has gone
        return WallboxStep(self._reconcile(notes), self._deadline())

    # --- inputs ---------------------------------------------------------------------------

    def _on_sample(self, value: int, now: float, notes: list[WallboxAction]) -> None:
        self._last_ok = now
        self.last_value = value
        self._clear(FaultCode.WALLBOX_LOST, notes)
        meaning = vehicle_state(self.profile, value)
        if meaning is None:
            self._raise(FaultCode.WALLBOX_STATE_INVALID,
                        f"{describe_value(self.profile, value)} is not in the table of "
                        f"profile {self.profile.name}", notes)
            return
        self._clear(FaultCode.WALLBOX_STATE_INVALID, notes)
        if meaning in FAULT_STATES:
            self._raise(FaultCode.WALLBOX_FAULT, f"wallbox reports {meaning.value} "
                        f"({describe_value(self.profile, value)})", notes)
        else:
            self._clear(FaultCode.WALLBOX_FAULT, notes)
        level = LEVELS[meaning]
        previous, self._level = self._level, level
        if level in CONNECTED_LEVELS and not self._plugged:
            self._plugged, self._stopped, self._stop_reason = True, False, ""
            self._authorised = self.settings.authorisation == "auto"
            if previous is not None:  # at start-up the ledger's recovery reports it
                notes.append(SessionEvent("plugged"))
        elif level is CpLevel.STATE_1 and self._plugged:
            self._plugged = self._authorised = self._stopped = False
            self._id_tag = None
            notes.append(SessionEvent("unplugged"))

    def _check_lost(self, now: float, notes: list[WallboxAction]) -> None:
        if self._last_ok is not None and now - self._last_ok >= self.settings.lost_s:
            self._raise(FaultCode.WALLBOX_LOST,
                        f"no answer for {now - self._last_ok:.1f} s", notes)

    def _raise(self, code: FaultCode, detail: str, notes: list[WallboxAction]) -> None:
        if code not in self._faults:
            self._faults[code] = detail
            notes.append(FaultRaised(code, detail))

    def _clear(self, code: FaultCode, notes: list[WallboxAction]) -> None:
        if self._faults.pop(code, None) is not None:
            notes.append(FaultCleared(code))

    # --- outputs --------------------------------------------------------------------------

    def _allowed(self) -> bool:
        if self._faults or self._stopped:
            return False
        return self.settings.authorisation == "auto" or self._authorised

    def _reconcile(self, notes: list[WallboxAction]) -> tuple[WallboxAction, ...]:
        first: list[WallboxAction] = []
        last: list[WallboxAction] = []
        command = (command_for(self.profile, self._limit, self.settings.rated_current_a)
                   if self._allowed() else DISABLED)
        if command != self._command:
            lower = command_amps(self.profile, command) < command_amps(self.profile,
                                                                        self._command)
            (first if lower else last).append(WriteCommand(command))
            self._command = command
        old_offer, old_state = self.offered_current_a, self._state
        self._state = self._state_now()
        if self._state is not old_state:
            first.append(StateChanged(old_state, self._state, 0))
            if old_state is S.CHARGING:
                first.append(SetContactor(False))
                first.append(SessionEvent("charging_stopped", self._why()))
            elif self._state is S.CHARGING:
                last.append(SetContactor(True))
                last.append(SessionEvent("charging_started", self._id_tag or ""))
        if self.offered_current_a != old_offer:
            last.append(OfferChanged(self.offered_current_a))
        return (*first, *notes, *last)

    def _state_now(self) -> PilotState:
        if self._faults:
            return S.FAULT
        if self._level in (None, CpLevel.STATE_1):
            return S.IDLE
        if not self._command.enabled:
            return S.CONNECTED
        if self._level in (CpLevel.STATE_3, CpLevel.STATE_D):
            return S.CHARGING
        return S.OFFERING

    def _why(self) -> str:
        if self._faults:
            return "fault " + ",".join(sorted(self._faults))
        if self._stopped:
            return self._stop_reason
        if self._level is CpLevel.STATE_2:
            return "CP state 2 (vehicle state B: S2 open)"
        if self._level is CpLevel.STATE_1:
            return "CP state 1 (unplugged)"
        return "paused (limit below the wallbox's minimum)"

    def _deadline(self) -> float | None:
        if self._last_ok is None or FaultCode.WALLBOX_LOST in self._faults:
            return None
        return self._last_ok + self.settings.lost_s
