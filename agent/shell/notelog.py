"""The log lines of what a connector's core decided: one place, so both kinds of connector
(a pilot board, a retrofit wallbox) name the same fact with the same event and keys."""

from __future__ import annotations

from typing import Any

from agent.pilot import (
    FaultCleared,
    FaultRaised,
    OfferChanged,
    SessionEvent,
    SetDuty,
    SetLock,
    StateChanged,
)
from agent.pilot.delivery import DutyMismatch, MeterFrozen, Output, Resend

__all__ = ["log_pilot_note", "log_session_note"]


def log_session_note(log: Any, cid: int, note: object) -> bool:
    """Log a note both kinds share (faults, offer, session); False if ``note`` is none."""
    match note:
        case FaultRaised():
            log.error("fault_raised", connector=cid, code=str(note.code), detail=note.detail)
        case FaultCleared():
            log.info("fault_cleared", connector=cid, code=str(note.code))
        case OfferChanged():
            log.info("offer_changed", connector=cid, offered_a=note.offered_a)
        case SessionEvent():
            log.info("session_event", connector=cid, kind=note.kind, reason=note.reason)
        case _:
            return False
    return True


def log_pilot_note(log: Any, cid: int, action: Output) -> None:
    """Log what the pilot-board connector's core asked for or noted."""
    if log_session_note(log, cid, action):
        return
    match action:
        case SetDuty():
            log.info("pilot_duty_commanded", connector=cid, duty_permille=action.duty)
        case SetLock():
            log.info("lock_commanded", connector=cid, locked=action.locked)
        case Resend():
            log.warning("write_resent", connector=cid, action=repr(action.action),
                        reason=action.reason, attempt=action.attempt)
        case StateChanged():
            log.info("pilot_state_changed", connector=cid, old=action.old.name,
                     new=action.new.name, cp_mv=action.cp_mv)
        case MeterFrozen():
            log.error("meter_frozen", connector=cid, reads=action.reads)
        case DutyMismatch():
            log.warning("duty_mismatch", connector=cid, actual=action.actual,
                        commanded=action.commanded)
