"""Without an aggregator (``mqtt: null``): the installer's limits and the session record, locally.

A private charger whose owner has not joined an aggregator is still a whole charger: the
configured ``local_limit_a`` applies, ``evse-agent limit`` changes it and survives a restart, and
every session is recorded in the ledger (``evse-agent sessions`` lists them). There is no journal,
no link and no limits engine here: the ceiling is min(installer or configured limit, cable,
hardware), the same local terms the engine uses with an aggregator, and the pilot machine
applies the cable and hardware ratings itself.

Ledger writes run on the store writer (``agent.writer``): a slow flash never delays the event
loop that polls the pilot. Sessions closed here are marked local: they are never sent to an
aggregator configured later (docs/sessions.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel

from agent.api.reasons import StopReason
from agent.config import AgentConfig, AnyConnector
from agent.errors import LedgerError
from agent.journal import Entry
from agent.ledger import Ledger
from agent.orderly.events import Body, EventLog
from agent.orderly.installer import (
    InstallerLimits,
    LimitInForce,
    SinceTracker,
    local_ref,
    site_limit,
)
from agent.orderly.sessions import Reading, SessionTracker
from agent.pilot import CpLevel, FaultRaised, LimitChanged, SessionEvent
from agent.shell.handle import ConnectorHandle

log = structlog.get_logger("agent.local")

TICK_S = 5.0  # last-seen time, meter register, max current and power of open sessions
PEAK_S = 1.0  # the meter's period: a new peak current or power is written when it is seen
RECOVERY_WAIT_S = 3.0


class NoEvents(EventLog):
    """Without an aggregator nothing is journaled: the ledger is the whole record."""

    def __init__(self) -> None:  # no journal
        self.failures = 0
        self._notify = None

    def event(self, type_: str, body: Body | Callable[[], Body],
              connector: int | None = None) -> Future[Entry | None]:
        return _nothing()

    def telemetry(self, connectors: list[BaseModel]) -> Future[Entry | None]:
        return _nothing()

    async def settled(self) -> None:
        return None


def _nothing() -> Future[Entry | None]:
    done: Future[Entry | None] = Future()
    done.set_result(None)
    return done


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


@dataclass(frozen=True, slots=True)
class _Peak:
    pass


@dataclass(frozen=True, slots=True)
class _SiteLimit:
    """The installer's (or configured) limit in force changed: a curtailment entry."""

    limit_a: float | None
    source: str


def local_limit_in_force(
    site_a: float | None, site_source: str, cable_a: float | None, hardware_a: float
) -> tuple[float, str]:
    """The lowest local term; on a tie the site limit, then the cable (as the engine's order)."""
    best = (hardware_a, "hardware")
    for value, source in ((cable_a, "cable"), (site_a, site_source)):
        if value is not None and value <= best[0]:
            best = (value, source)
    return best


class LocalService:
    """Installer limits (and, with the ledger, sessions) when no aggregator is configured."""

    def __init__(self, config: AgentConfig, controllers: list[ConnectorHandle]) -> None:
        self.config = config
        self.controllers = {c.id: c for c in controllers}
        self.connectors: dict[int, AnyConnector] = {c.id: c for c in config.connectors}
        self.installer = InstallerLimits(config.state_dir)
        self._since = SinceTracker()
        try:
            self.ledger = Ledger(config.state_dir / "sessions.db")
        except LedgerError as exc:  # charging never depends on the record: keep it in memory
            log.error("ledger_unavailable", error=str(exc), fallback="memory")
            self.ledger = Ledger(":memory:")
        self.trackers = {cid: SessionTracker(
            cid, self.ledger, NoEvents(), reading=self._reading(ctl), offline=lambda: True,
            idle_occupancy_s=lambda: float("inf"), local=True)
            for cid, ctl in self.controllers.items()}
        self._queue: asyncio.Queue[tuple[int, Any, float]] = asyncio.Queue()
        self._curtailing: dict[int, tuple[str, float, float]] = {}  # id, from, limit
        for ctl in controllers:
            ctl.on_event = self.note  # queued until run() has recovered the ledger
        for cid, ctl in self.controllers.items():  # before the control tasks poll
            ctl.feed_first(LimitChanged(self._site(cid)[0]))
        log.info("local_limits", limits={cid: self._site(cid)[0] for cid in self.controllers},
                 path=str(self.installer.path))

    def _site(self, cid: int) -> tuple[float | None, str]:
        inst = self.installer.get(cid)
        return site_limit(self.connectors[cid].local_limit_a, inst), (
            "installer" if inst is not None else "config")

    async def set_limit(self, cid: int, limit_a: float | None) -> None:
        """Store first (so a crash right after keeps what the installer was told), then feed."""
        await asyncio.to_thread(self.installer.set, cid, limit_a, time.time())
        site, source = self._site(cid)
        log.info("installer_limit_set", connector=cid, limit_a=limit_a, in_force=site,
                 source=source)
        await self.controllers[cid].feed(LimitChanged(site))
        self._queue.put_nowait((cid, _SiteLimit(site, source), time.time()))

    def stop_origin(self, cid: int, origin: StopReason) -> None:
        self.trackers[cid].stop_requested(origin)

    def limit(self, cid: int) -> LimitInForce:
        site, site_source = self._site(cid)
        ctl = self.controllers[cid]
        conn = self.connectors[cid]
        value, source = local_limit_in_force(site, site_source, ctl.machine.cable_rating_a,
                                             conn.rated_current_a)
        inst = self.installer.get(cid)
        since = self._since.since(cid, (source, value), time.time())
        if source == "installer" and inst is not None:
            since = inst.since
        return LimitInForce(value, source, "local", local_ref(source, cid, self.installer.path),
                            since)

    def status(self, cid: int) -> dict[str, Any]:
        return {"limit": self.limit(cid).status()}

    # --- sessions ----------------------------------------------------------------------------

    def note(self, cid: int, note: Any, _mono: float) -> None:
        """The control task's sink: never blocks, never raises."""
        if isinstance(note, SessionEvent | FaultRaised):
            self._queue.put_nowait((cid, note, time.time()))

    async def sessions(self, since: float | None, connector: int | None) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(self.ledger.sessions, since=since, connector=connector)
        return [s.listing() for s in found]

    async def run(self) -> None:
        await self._recover()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._consume(), name="local-sessions")
            tg.create_task(self._ticks(), name="local-ticks")

    async def _recover(self) -> None:
        """After a crash or power loss: resume the sessions of EVs still plugged, close the rest
        as PowerLoss (local), open one for an EV that arrived while the agent was down."""
        deadline = time.monotonic() + RECOVERY_WAIT_S
        while time.monotonic() < deadline and not all(  # noqa: ASYNC110 (polling a core)
                c.machine.ev_level is not None and c.stats.last_meter is not None
                for c in self.controllers.values()):
            await asyncio.sleep(0.05)
        plugged = {cid for cid, c in self.controllers.items()
                   if c.machine.ev_level not in (None, CpLevel.STATE_1)}
        meters = {cid: (round(c.stats.last_meter.energy_import_wh)
                        if c.stats.last_meter is not None else None)
                  for cid, c in self.controllers.items()}
        found = await asyncio.to_thread(self.ledger.recover, time.time(), meters, plugged)
        for r in found:
            if r.resumed:
                cid = r.session.connector
                self.trackers[cid].session = r.session
                for c in r.session.curtailments:  # the installer limit entry still open
                    if c.source == "installer" and c.to_at is None:
                        self._curtailing[cid] = (c.source_id, c.from_at,
                                                 float(c.limit["value"]))
                self._queue.put_nowait((cid, _SiteLimit(*self._site(cid)), time.time()))
                log.info("session_resumed", session_id=r.session.session_id)
            else:
                await asyncio.to_thread(self.ledger.mark_local, r.session.session_id)
                log.warning("session_closed_power_loss", session_id=r.session.session_id)
        for cid in plugged:
            if self.trackers[cid].session is None:
                self._queue.put_nowait((cid, SessionEvent("plugged"), time.time()))

    async def _consume(self) -> None:
        while True:
            cid, note, wall = await self._queue.get()
            try:  # one at a time, in a worker thread: ledger writes never block the loop
                await asyncio.to_thread(self._handle, cid, note, wall)
            except Exception:
                log.exception("session_record_failed", connector=cid, note=repr(note))

    async def _ticks(self) -> None:
        """Peaks every meter period (a write only when one rises), the full tick every TICK_S:
        a session shorter than a tick still records its maximum current."""
        every = max(1, round(TICK_S / PEAK_S))
        n = 0
        while True:
            await asyncio.sleep(PEAK_S)
            n += 1
            note = _Tick() if n % every == 0 else _Peak()
            for cid, tracker in self.trackers.items():
                if tracker.session is not None:
                    self._queue.put_nowait((cid, note, time.time()))

    def _handle(self, cid: int, note: Any, now: float) -> None:
        tracker = self.trackers[cid]
        if isinstance(note, _Tick):
            tracker.tick(now)
        elif isinstance(note, _Peak):
            tracker.peak()
        elif isinstance(note, FaultRaised):
            tracker.fault(note.code)
        elif isinstance(note, _SiteLimit):
            self._curtail(cid, note.limit_a, note.source, now)
        elif note.kind == "plugged":
            tracker.plugged(now)
            site, source = self._site(cid)
            self._curtail(cid, site, source, now)
        elif note.kind == "charging_started":
            tracker.authorised(note.reason or None)
            tracker.charging_started(now)
        elif note.kind == "charging_stopped":
            tracker.charging_stopped(now, note.reason)
        elif note.kind == "unplugged":
            tracker.unplugged(now)
            self._curtailing.pop(cid, None)

    def _curtail(self, cid: int, limit_a: float | None, source: str, now: float) -> None:
        """The session record lists the installer's (or configured) limits that applied."""
        tracker = self.trackers[cid]
        ref = "evse-agent limit" if source == "installer" else "local_limit_a"
        prev = self._curtailing.get(cid)
        if prev is not None and (prev[0], prev[2]) == (ref, limit_a):
            return  # unchanged (e.g. after a restart)
        self._curtailing.pop(cid, None)
        if prev is not None:
            tracker.curtailment("installer", prev[0], prev[1],
                                {"value": prev[2], "unit": "A"}, to_at=now)
        if limit_a is not None and tracker.session is not None:
            self._curtailing[cid] = (ref, now, limit_a)
            tracker.curtailment("installer", ref, now, {"value": limit_a, "unit": "A"})

    @staticmethod
    def _reading(ctl: ConnectorHandle) -> Any:
        def read() -> Reading:
            meter = ctl.stats.last_meter
            if meter is None:
                return Reading(None, None)
            current: Sequence[float] = meter.current_a
            return Reading(round(meter.energy_import_wh), meter.power_w,
                           max(current, default=0.0))
        return read
