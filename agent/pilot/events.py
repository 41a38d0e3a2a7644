"""Inputs (events) and outputs (actions) of the pilot core: frozen, slotted value objects.

The shell turns driver results into events, calls ``PilotMachine.step(event, now)`` and applies
the returned actions *in order*: whenever an open is needed, ``SetContactor(False)`` is first.
Commands (``SetContactor``, ``SetDuty``, ``SetLock``, ``ResetBoardFaults``) go to the boards;
notifications (``StateChanged``, ``FaultRaised``, ``FaultCleared``, ``OfferChanged``,
``SessionEvent``) are for logs, the ledger and MQTT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.faults import FaultCode
from agent.pilot.table import PilotState
from drivers.pilot_status import PilotStatus

__all__ = [
    "Action",
    "Authorize",
    "BoardStatus",
    "Event",
    "FaultCleared",
    "FaultRaised",
    "LimitChanged",
    "MeterReadFailed",
    "MeterSampled",
    "OfferChanged",
    "PilotReadFailed",
    "PilotSampled",
    "RelayReadFailed",
    "RelaySampled",
    "ResetBoardFaults",
    "ResetRequested",
    "SessionEvent",
    "SetContactor",
    "SetDuty",
    "SetLock",
    "StateChanged",
    "Step",
    "StopRequested",
    "Tick",
]

# --- events (inputs) ------------------------------------------------------------------------


BoardStatus = PilotStatus
"""The pilot board's latched status flags (hardware.md ``status`` register): the driver's own
typed flag set (``drivers.pilot_status``), so the core cannot drift from the board's map.
``FAILSAFE``: its own watchdog holds +12 V (we stopped talking to it)."""


@dataclass(frozen=True, slots=True)
class PilotSampled:
    """One read of the pilot board's input block (hardware.md), in engineering units."""

    cp_high_mv: int
    cp_low_mv: int
    duty_actual: int
    cc_ohm: int
    status: BoardStatus | int  # the shell passes BoardStatus; tests may pass the raw bits
    sample_seq: int
    temperature_c: float


@dataclass(frozen=True, slots=True)
class PilotReadFailed:
    """The pilot-board read failed (timeout, CRC, exception)."""


@dataclass(frozen=True, slots=True)
class RelaySampled:
    """The relay board's feedback inputs: mirror contact and lock feedback."""

    contactor_closed: bool
    lock_engaged: bool


@dataclass(frozen=True, slots=True)
class RelayReadFailed:
    """The relay-board read failed."""


@dataclass(frozen=True, slots=True)
class MeterSampled:
    """Phase currents (A) from the energy meter (one value per phase)."""

    current_a: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class MeterReadFailed:
    """The meter read failed."""


@dataclass(frozen=True, slots=True)
class LimitChanged:
    """The composite external current limit (config, MQTT, schedules); None = no limit."""

    limit_a: float | None


@dataclass(frozen=True, slots=True)
class Authorize:
    """Authorise the session of the connected vehicle (remote mode, or a fresh start)."""

    id_tag: str | None = None


@dataclass(frozen=True, slots=True)
class StopRequested:
    """End the authorisation: stop PWM, open once the vehicle stops drawing."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class ResetRequested:
    """Operator reset: clears faults whose cause has gone (and resets the board's bits)."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Nothing new; time has passed (the shell sends it at ``next_deadline``)."""


Event = (
    PilotSampled
    | PilotReadFailed
    | RelaySampled
    | RelayReadFailed
    | MeterSampled
    | MeterReadFailed
    | LimitChanged
    | Authorize
    | StopRequested
    | ResetRequested
    | Tick
)

# --- actions (outputs) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetContactor:
    """Drive the main contactor coil (K1/K2)."""

    closed: bool


@dataclass(frozen=True, slots=True)
class SetDuty:
    """Write ``duty_cmd`` (0.1 %): 1000 steady +12 V, 0 steady -12 V, else PWM."""

    duty: int


@dataclass(frozen=True, slots=True)
class SetLock:
    """Drive the plug-lock actuator (socket outlets only)."""

    locked: bool


@dataclass(frozen=True, slots=True)
class ResetBoardFaults:
    """Write ``fault_reset`` = 1: the board clears latched bits whose cause has gone."""


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The machine moved from ``old`` to ``new``; ``cp_mv`` is the last CP plateau."""

    old: PilotState
    new: PilotState
    cp_mv: int


@dataclass(frozen=True, slots=True)
class FaultRaised:
    """A fault latched (raised once per occurrence)."""

    code: FaultCode
    detail: str


@dataclass(frozen=True, slots=True)
class FaultCleared:
    """A latched fault met its clearing condition."""

    code: FaultCode


@dataclass(frozen=True, slots=True)
class OfferChanged:
    """The current advertised on the pilot changed (None: no PWM)."""

    offered_a: float | None


SessionKind = Literal["plugged", "charging_started", "charging_stopped", "unplugged"]


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A session milestone for the ledger."""

    kind: SessionKind
    reason: str = ""


Action = (
    SetContactor
    | SetDuty
    | SetLock
    | ResetBoardFaults
    | StateChanged
    | FaultRaised
    | FaultCleared
    | OfferChanged
    | SessionEvent
)


@dataclass(frozen=True, slots=True)
class Step:
    """The result of one ``step``: actions to apply in order, and when to call again."""

    actions: tuple[Action, ...]
    next_deadline: float | None
