"""Turns the control tasks' notifications into events, session records, telemetry and state.

The control loop only puts notes into a queue (``note``); this task does the journal and ledger
writes, so a slow disk never sits between a CP change and the contactor-open frame.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import structlog

from agent.api import models as m
from agent.config import AgentConfig
from agent.journal import Journal
from agent.ledger import Ledger
from agent.orderly.control import OrderlyControl
from agent.orderly.events import EventLog, ev_letter, from_wire
from agent.orderly.runtime import RuntimeSettings
from agent.orderly.sessions import SessionTracker
from agent.pilot import (
    CpLevel,
    FaultCleared,
    FaultRaised,
    OfferChanged,
    SessionEvent,
    SetContactor,
)
from agent.pilot.delivery import EvLevelChanged, FeedbackChanged
from agent.shell.handle import ConnectorHandle
from agent.store import rfc3339


class ReporterHost(Protocol):
    """What the reporter reads of the orderly service (which owns it): no import cycle."""

    boot_id: str
    config: AgentConfig
    control: OrderlyControl
    controllers: dict[int, ConnectorHandle]
    events: EventLog
    journal: Journal
    ledger: Ledger
    runtime: RuntimeSettings
    trackers: dict[int, SessionTracker]

    def _state_changed(self) -> None: ...

log = structlog.get_logger("agent.reporter")

RECOVERY_WAIT_S = 3.0
MIN_TELEMETRY_GAP_S = 1.0


class Reporter:
    def __init__(self, svc: ReporterHost) -> None:
        self.svc = svc
        self._queue: asyncio.Queue[tuple[int, Any, float]] = asyncio.Queue()
        self._tel_wake = asyncio.Event()
        self._last_tel = 0.0

    def note(self, cid: int, note: Any, _mono: float) -> None:
        """Called by the control task: never blocks, never raises."""
        self._queue.put_nowait((cid, note, time.time()))

    def reschedule_telemetry(self) -> None:
        self._tel_wake.set()

    # --- start-up: close or resume what a crash left open ---------------------------------

    async def recover(self) -> None:
        deadline = time.monotonic() + RECOVERY_WAIT_S
        ctls = self.svc.controllers
        while time.monotonic() < deadline and not all(  # noqa: ASYNC110 (polling a core)
                c.machine.ev_level is not None and c.stats.last_meter is not None
                for c in ctls.values()):
            await asyncio.sleep(0.05)
        plugged = {cid for cid, c in ctls.items()
                   if c.machine.ev_level not in (None, CpLevel.STATE_1)}
        meters = {cid: (round(c.stats.last_meter.energy_import_wh)
                        if c.stats.last_meter is not None else None) for cid, c in ctls.items()}
        recovered = await asyncio.to_thread(self.svc.ledger.recover, time.time(), meters, plugged)
        for r in recovered:
            tracker = self.svc.trackers[r.session.connector]
            if r.resumed:
                tracker.session = r.session
                self.svc.control.session_started(r.session.connector, r.session.plug_in_at)
                log.info("session_resumed", session_id=r.session.session_id)
            else:
                log.warning("session_closed_power_loss", session_id=r.session.session_id)
        for tracker in self.svc.trackers.values():
            tracker.report_unreported()
        for cid in plugged:  # plugged in while we were down, with no session on record
            if self.svc.trackers[cid].session is None:
                self._queue.put_nowait((cid, SessionEvent("plugged"), time.time()))

    # --- the note queue --------------------------------------------------------------------

    async def run(self) -> None:
        """Handle the notes as they come, one per turn of the event loop: the notes of a CP
        event arrive together, and between two of them the control loops' reads and writes go
        first (a note costs pydantic models and a journal job; a pilot answer waits behind it
        otherwise). The retained ``state`` is rebuilt once the queue is empty, not per note."""
        while True:
            item = await self._queue.get()
            while True:
                cid, note, wall = item
                try:
                    self._handle(cid, note, wall)
                except Exception:
                    log.exception("report_failed", connector=cid, note=repr(note))
                await asyncio.sleep(0)
                if self._queue.empty():
                    break
                item = self._queue.get_nowait()
            self.svc._state_changed()

    def _handle(self, cid: int, note: Any, now: float) -> None:
        svc = self.svc
        tracker = svc.trackers[cid]
        ctl = svc.controllers[cid]
        ev = svc.events
        if isinstance(note, EvLevelChanged) and (
                note.old is not None or note.new is not CpLevel.STATE_1):
            # Before the first stable level the charger shows state 1 (A): report from A.
            ev.event("pilotStateChanged", from_wire(m.PilotStateChangedBody, {
                "from": ev_letter(note.old), "to": ev_letter(note.new),
                "volts": max(-15.0, min(15.0, note.cp_mv / 1000))}), cid)
            self._significant()
            if len(svc.controllers) > 1:  # a vehicle asking or not moves the siteMax share
                svc.control.wake()
        elif isinstance(note, SetContactor | FeedbackChanged):
            fb = ctl.stats.last_contactor_feedback
            ev.event("contactorChanged", m.ContactorChangedBody(
                commanded="closed" if ctl.machine.contactor_commanded else "open",
                feedback="unknown" if fb is None else "closed" if fb else "open"), cid)
            self._significant()
        elif isinstance(note, FaultRaised):
            ev.event("fault", m.FaultBody(code=note.code, detail=note.detail[:256] or None), cid)
            tracker.fault(note.code)
        elif isinstance(note, FaultCleared):
            ev.event("faultCleared", m.FaultBody(code=note.code), cid)
        elif isinstance(note, SessionEvent):
            self._session(cid, note, now)
        elif isinstance(note, OfferChanged):
            self._session_update(cid)
            self._significant()

    def _session(self, cid: int, note: SessionEvent, now: float) -> None:
        tracker = self.svc.trackers[cid]
        if note.kind == "plugged":
            tracker.plugged(now)
            self.svc.control.session_started(cid, now)
        elif note.kind == "charging_started":
            tracker.authorised(note.reason or None)
            tracker.charging_started(now)
        elif note.kind == "charging_stopped":
            tracker.charging_stopped(now, note.reason)
        elif note.kind == "unplugged":
            tracker.unplugged(now)
            self.svc.control.session_ended(cid)

    def _session_update(self, cid: int) -> None:
        ctl = self.svc.controllers[cid]
        lim = self.svc.control.snapshot_limits(cid)
        self.svc.trackers[cid].updated(
            ev_letter(ctl.machine.ev_level, ctl.machine.state),
            ctl.machine.offered_current_a or 0.0, lim["limitA"], lim["limitSource"])

    # --- telemetry -----------------------------------------------------------------------------

    def _significant(self) -> None:
        self._tel_wake.set()

    def _period(self) -> float:
        rt = self.svc.runtime
        charging = any(c.machine.contactor_commanded for c in self.svc.controllers.values())
        return float(rt.telemetry_period_s if charging else rt.telemetry_idle_period_s)

    async def telemetry_loop(self) -> None:
        while True:
            self._tel_wake.clear()
            try:
                async with asyncio.timeout(self._period()):
                    await self._tel_wake.wait()
                await asyncio.sleep(max(0.0, self._last_tel + MIN_TELEMETRY_GAP_S - time.time()))
            except TimeoutError:
                pass
            self._last_tel = time.time()
            for tracker in self.svc.trackers.values():
                tracker.tick(self._last_tel)
                if self.svc.events.failures:  # a sessionEnded refused (disk full) earlier:
                    tracker.report_unreported()  # journal it now rather than at the next boot
            self.svc.events.telemetry([self._connector_tel(cid) for cid in self.svc.controllers])

    def _connector_tel(self, cid: int) -> m.ConnectorTelemetry:
        ctl = self.svc.controllers[cid]
        mach = ctl.machine
        meter = ctl.stats.last_meter
        lim = self.svc.control.snapshot_limits(cid)
        session = self.svc.trackers[cid].session
        return from_wire(m.ConnectorTelemetry, {
            "connector": cid,
            "pilot": ev_letter(mach.ev_level, mach.state),
            "powerW": round(meter.power_w, 1) if meter else 0.0,
            "currentA": [round(a, 3) for a in meter.current_a] if meter else [],
            "voltageV": [round(v, 1) for v in meter.voltage_v] if meter else [],
            "energyImportWh": round(meter.energy_import_wh) if meter else
            (session.last_meter_wh if session else 0),
            "offeredCurrentA": mach.offered_current_a or 0.0,
            "limitA": lim["limitA"],
            "limitSource": lim["limitSource"],
            "sessionId": session.session_id if session else None,
            "contactor": "closed" if mach.contactor_commanded else "open",
            "tempC": mach.temperature_c,
        })

    # --- retained state ---------------------------------------------------------------------

    def state_payload(self) -> dict[str, Any]:
        svc = self.svc
        now = time.time()
        connectors = []
        profiles = svc.control.active_profiles()
        for cid, ctl in svc.controllers.items():
            mach = ctl.machine
            snap: dict[str, Any] = {
                "connector": cid, "pilot": ev_letter(mach.ev_level, mach.state),
                "offeredCurrentA": mach.offered_current_a or 0.0,
                "contactor": "closed" if mach.contactor_commanded else "open",
                "activeProfiles": profiles,
            }
            snap.update(svc.control.snapshot_limits(cid))
            connectors.append(snap)
        since = svc.control.failsafe_since
        state = from_wire(m.State, {
            "deviceId": svc.config.device_id, "bootId": svc.boot_id,
            "atSeq": svc.journal.last_seq, "ts": rfc3339(now),
            "configVersion": svc.runtime.config_version,
            "failsafe": {"active": since is not None,
                         "since": rfc3339(since) if since else None},
            "connectors": connectors,
        })
        data = state.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert isinstance(data, dict)
        return data
