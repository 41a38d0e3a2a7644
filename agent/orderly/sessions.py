"""Charging sessions: written through to the ledger at every change, reported as events.

A session runs from plug-in to plug-out. Energy is the meter's cumulative import register at
both ends (never integrated telemetry). After a crash or power loss, ``recover`` closes what
ended unseen as ``PowerLoss`` or resumes the session of an EV that is still plugged.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal, TypeVar

import structlog

from agent.api.models import (
    IdleOccupancyBody,
    SessionEndedBody,
    SessionStartedBody,
    SessionUpdatedBody,
)
from agent.api.reasons import StopReason
from agent.errors import StoreError
from agent.faults import FaultCode
from agent.journal import Entry
from agent.ledger import Curtailment, Ledger, RandomDelay, Session
from agent.limits import CompositeLimit
from agent.orderly.events import EventLog, from_wire
from agent.store import rfc3339

log = structlog.get_logger("agent.sessions")
T = TypeVar("T")

FAULT_STOP = {
    FaultCode.RCD_TRIP: StopReason.GROUND_FAULT,
    FaultCode.PE_LOSS: StopReason.GROUND_FAULT,
    FaultCode.ESTOP: StopReason.EMERGENCY_STOP,
    FaultCode.OVERCURRENT: StopReason.OVERCURRENT_FAULT,
}


@dataclass
class Reading:
    """What the tracker needs from the connector's latest measurements."""

    energy_wh: int | None
    power_w: float | None
    current_a: float | None = None  # the highest phase current


class SessionTracker:
    """One connector's session bookkeeping."""

    def __init__(
        self,
        connector: int,
        ledger: Ledger,
        events: EventLog,
        *,
        reading: Callable[[], Reading],
        offline: Callable[[], bool],
        idle_occupancy_s: Callable[[], float],
        local: bool = False,
    ) -> None:
        self.connector = connector
        self._ledger = ledger
        self._events = events
        self._reading = reading
        self._offline = offline
        self._idle_s = idle_occupancy_s
        self._local = local  # no aggregator: sessions are closed as local, never reported
        self.session: Session | None = ledger.open_on(connector)
        self._stop_reason: StopReason | None = None
        self._idle_reported = False
        self._last_energy: int | None = self.session.last_meter_wh if self.session else None
        self.curtailment_starts: dict[tuple[str, str], float] = {}

    # --- milestones from the pilot machine ---------------------------------------------------

    def plugged(self, now: float) -> None:
        if self.session is not None:
            return  # resumed after a restart: the same plug-in
        wh = self._energy()
        self.session = self._safe(lambda: self._ledger.open_session(
            self.connector, now, wh, offline=self._offline()))
        self._stop_reason = None
        self._idle_reported = False
        self.curtailment_starts = {}
        if self.session is not None:
            s = self.session
            self._events.event("sessionStarted", from_wire(SessionStartedBody, {
                "sessionId": s.session_id, "plugInAt": rfc3339(now), "meterStartWh": wh,
                "idTag": s.id_tag}), self.connector)

    def authorised(self, id_tag: str | None) -> None:
        if self.session is not None and id_tag:
            self._update(id_tag=id_tag)

    def charging_started(self, now: float) -> None:
        self._stop_reason = None
        self._idle_reported = False
        self._update(at=now, charge_start_at=now, meter_wh=self._energy())

    def charging_stopped(self, now: float, reason: str) -> None:
        if self._stop_reason is None and ("state 2" in reason or "S2" in reason):
            self._stop_reason = StopReason.STOPPED_BY_EV
        r = self._reading()
        self._update(at=now, charge_end_at=now, meter_wh=self._energy(), power_w=r.power_w,
                     current_a=r.current_a)

    def stop_requested(self, origin: StopReason) -> None:
        self._stop_reason = origin

    def fault(self, code: FaultCode) -> None:
        if self.session is not None and self._stop_reason is None:
            self._stop_reason = FAULT_STOP.get(code, StopReason.OTHER)

    def unplugged(self, now: float) -> None:
        s = self.session
        if s is None:
            return
        reason = self._stop_reason or (
            StopReason.EV_DISCONNECTED if s.charging else StopReason.STOPPED_BY_EV
            if s.charge_start_at is not None else StopReason.EV_DISCONNECTED)
        self.peak()  # the last reading may hold a peak no tick has written yet
        s = self.session or s
        wh = max(self._energy(), s.last_meter_wh)
        record = self._safe(lambda: self._ledger.close(s.session_id, now, wh, reason.value))
        self.session = None
        if record is not None and self._local:
            self._safe(lambda: self._ledger.mark_local(s.session_id))
        elif record is not None:
            self._report(s.session_id, record)

    # --- orderly charging facts ---------------------------------------------------------------

    def curtailment(self, source: str, source_id: str, from_at: float, limit: dict[str, object],
                    to_at: float | None = None) -> None:
        if self.session is not None:
            kind: Literal["commandId", "profileId", "installer"] = (
                "commandId" if source == "commandId" else
                "installer" if source == "installer" else "profileId")
            self._update(curtailment=Curtailment(kind, source_id, from_at, limit, to_at))

    def retarget(self, new: CompositeLimit, old: CompositeLimit | None, now: float) -> None:
        """The limit in force changed: the one it replaced ends its curtailment, the new one
        (a command's or a profile's) starts one."""
        if old is not None and (old.command_id or old.profile_id) and (
                old.command_id, old.profile_id) != (new.command_id, new.profile_id):
            self._curtail(old.command_id, old.profile_id, old.limit_a, now, ended=True)
        if new.command_id or new.profile_id:
            self._curtail(new.command_id, new.profile_id, new.limit_a, now, ended=False)

    def _curtail(self, command_id: str | None, profile_id: str | None, limit_a: float | None,
                 now: float, *, ended: bool) -> None:
        source, sid = ("commandId", command_id) if command_id else ("profileId", profile_id)
        assert sid is not None
        key = (source, sid)
        limit: dict[str, object] = {"value": limit_a or 0.0, "unit": "A"}
        if ended:
            start = self.curtailment_starts.pop(key, None)
            if start is not None:
                self.curtailment(source, sid, start, limit, to_at=now)
        elif key not in self.curtailment_starts:
            self.curtailment_starts[key] = now
            self.curtailment(source, sid, now, limit)

    def random_delay(self, at: float, seconds: float) -> None:
        if self.session is not None:
            self._update(random_delay=RandomDelay(at, round(seconds)))

    def updated(self, pilot: str, offered_a: float, limit_a: float, source: str,
                delay_s: float | None = None) -> None:
        s = self.session
        if s is None:
            return
        body = {"sessionId": s.session_id, "pilot": pilot, "offeredCurrentA": offered_a,
                "limitA": limit_a, "limitSource": source}
        if delay_s is not None:
            body["randomDelayS"] = round(delay_s)
        self._events.event("sessionUpdated", from_wire(SessionUpdatedBody, body),
                           self.connector)

    def peak(self) -> None:
        """Write the latest reading's current and power only if they raise the session's maxima:
        sampled every meter period, written a few times per session."""
        s = self.session
        if s is None:
            return
        r = self._reading()
        higher_a = r.current_a is not None and r.current_a > s.max_current_a
        higher_w = r.power_w is not None and round(r.power_w) > s.max_power_w
        if higher_a or higher_w:
            self._update(power_w=r.power_w, current_a=r.current_a)

    def tick(self, now: float) -> None:
        """Periodic: last-seen time, meter, max power; the idle-occupancy event."""
        s = self.session
        if s is None:
            return
        r = self._reading()
        self._update(at=now, meter_wh=self._energy(), power_w=r.power_w, current_a=r.current_a)
        s = self.session
        if (s is not None and not s.charging and s.charge_end_at is not None
                and not self._idle_reported and now - s.charge_end_at >= self._idle_s()):
            self._idle_reported = True
            self._events.event("idleOccupancy", from_wire(IdleOccupancyBody, {
                "sessionId": s.session_id, "chargeEndAt": rfc3339(s.charge_end_at),
                "idleS": round(now - s.charge_end_at, 3)}), self.connector)

    # --- recovery -------------------------------------------------------------------------

    def report_unreported(self) -> None:
        """Records closed but not journaled (a crash between close and append): send them."""
        for s in self._ledger.unreported():
            if s.connector == self.connector:
                self._report(s.session_id, s.record())

    def _report(self, session_id: str, record: dict[str, object]) -> None:
        record = {**record, "idleOccupancyS": round(float(str(record["idleOccupancyS"])))}
        body = from_wire(SessionEndedBody, record)
        journaled = self._events.event("sessionEnded", body, self.connector)

        def mark(done: Future[Entry | None]) -> None:  # on the writer, once it is committed
            entry = None if done.exception() else done.result()
            if entry is not None:
                self._safe(lambda: self._ledger.mark_reported(session_id, entry.seq))
        journaled.add_done_callback(mark)

    # --- helpers --------------------------------------------------------------------------

    def _energy(self) -> int:
        r = self._reading()
        if r.energy_wh is not None:
            self._last_energy = r.energy_wh
        return self._last_energy or 0

    def _update(self, **changes: object) -> None:
        s = self.session
        if s is None:
            return
        updated = self._safe(lambda: self._ledger.update(s.session_id, **changes))  # type: ignore[arg-type]
        if updated is not None:
            self.session = updated

    def _safe(self, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except StoreError as exc:
            log.error("ledger_write_failed", connector=self.connector, error=str(exc))
            return None
