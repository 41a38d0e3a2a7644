"""Orderly charging: the limits engine's composite, fed to each connector's pilot machine.

The engine is pure; this class owns its clock (wall time, since profiles carry dates), its
persistence (``limits.json``, written atomically on every change) and the events that tell the
aggregator what happened to its commands: started (with the limit applied and the random delay
drawn), superseded, cleared, completed, expired; fail-safe entered/exited. It wakes when the
engine says the composite may change, when a command arrives, or when the context changes
(plug-in, link up/down), never on a fixed poll.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from agent.api.models import (
    CommandClearedBody,
    CommandRef,
    CommandStartedBody,
    CommandSupersededBody,
    FailsafeEnteredBody,
    FailsafeExitedBody,
    Limit,
)
from agent.errors import ConfigError
from agent.limits import (
    ChargeContext,
    ChargingProfile,
    EffectiveLimit,
    EngineConfig,
    FailsafeConfig,
    LimitsEngine,
    LinkState,
    LocalLimits,
    RateUnit,
    StationInput,
)
from agent.orderly.events import EventLog, from_wire
from agent.orderly.reporter import ev_letter
from agent.orderly.sessions import SessionTracker
from agent.pilot import LimitChanged, PilotState
from agent.pilot.classifier import CpLevel
from agent.shell.handle import ConnectorHandle
from agent.store import atomic_write, rfc3339
from agent.writer import shared_writer

log = structlog.get_logger("agent.orderly")

MAX_SLEEP_S = 5.0
SOURCE_NAMES = {"local:site": "installer", "local:cable": "cable", "local:hardware": "hardware"}


def api_source(source: str) -> str:
    return SOURCE_NAMES.get(source, source)


def _below(new: float | None, old: float | None) -> bool:
    """Whether feeding ``new`` after ``old`` lowers the offer (None: no ceiling)."""
    return new is not None and (old is None or new < old)


def ref_of(p: ChargingProfile) -> CommandRef:
    if p.source_command_id:
        return CommandRef(command_id=p.source_command_id)
    return CommandRef(profile_id=p.profile_id)


@dataclass
class ConnectorInputs:
    """What the engine's context needs from one connector, beyond the engine itself."""

    controller: ConnectorHandle
    tracker: SessionTracker | None
    phases: int
    rated_a: float
    site_limit_a: float | None
    nominal_voltage_v: float | None = None  # None: the engine's
    session_start: float | None = None
    fed_limit: float | None = field(default=-1.0)  # sentinel: nothing fed yet
    effective: EffectiveLimit | None = None


def commanded_limit(p: ChargingProfile) -> Limit:
    """The limit of the first period in the unit the command used: a setLimit in kW is stored
    as W (``parse_limit``) and echoed in kW, so ``commandStarted`` repeats what was sent."""
    value = p.schedule.periods[0].limit
    if p.commanded_kw:
        return Limit(value=round(value / 1000, 9), unit="kW")
    unit: Literal["A", "W"] = "A" if p.schedule.unit is RateUnit.A else "W"
    return Limit(value=value, unit=unit)


class OrderlyControl:
    def __init__(
        self,
        engine: LimitsEngine,
        connectors: dict[int, ConnectorInputs],
        events: EventLog,
        state_path: Path,
        *,
        link_online: Callable[[], tuple[bool, float | None]],
        on_change: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.connectors = connectors
        self._events = events
        self._state_path = state_path
        self._link_online = link_online
        self._on_change = on_change
        self._clock = clock
        self._wake = asyncio.Event()
        self._feeds: set[asyncio.Task[object]] = set()  # held so none is collected mid-flight
        self._started: set[str] = set()
        self._failsafe_since: float | None = None
        self.decommissioned = False

    # --- construction ------------------------------------------------------------------

    @staticmethod
    def make_engine(path: Path, *, seed: int | None, random_delay_max_s: float,
                    failsafe: FailsafeConfig | None, nominal_voltage_v: float,
                    supply_phases: int) -> LimitsEngine:
        rng = random.Random(seed)
        config = EngineConfig(nominal_voltage_v=nominal_voltage_v, supply_phases=supply_phases)
        if path.exists():
            try:
                engine = LimitsEngine.from_dict(json.loads(path.read_text()), rng.uniform, config)
                log.info("limits_restored", profiles=len(engine.profiles), path=str(path))
                return engine
            except (ValueError, KeyError, TypeError, ConfigError) as exc:
                bad = path.with_suffix(f".corrupt-{int(time.time())}")
                path.replace(bad)
                log.error("limits_state_unreadable", path=str(path), moved_to=str(bad),
                          error=str(exc))
        return LimitsEngine(rng.uniform, config, random_delay_max_s=random_delay_max_s,
                            failsafe=failsafe)

    def persist(self) -> None:
        """limits.json, replaced on the store writer (in order with the journal and the
        command store: a command's reply waits for it); the loop goes on."""
        data, path = json.dumps(self.engine.to_dict()).encode(), self._state_path

        def write() -> None:
            try:
                atomic_write(path, data)
            except OSError as exc:
                log.error("limits_persist_failed", path=str(path), error=str(exc))
        shared_writer().submit(write)

    # --- context -----------------------------------------------------------------------

    def context(self, cid: int) -> ChargeContext:
        c = self.connectors[cid]
        meter = c.controller.stats.last_meter
        volts = tuple(meter.voltage_v) if meter is not None else ()
        online, since = self._link_online()
        return ChargeContext(
            voltages_v=volts,
            phases_in_use=c.phases,
            session_start=c.session_start,
            link=LinkState(online, since),
            local=LocalLimits(c.rated_a, c.controller.machine.cable_rating_a, c.site_limit_a),
            nominal_voltage_v=c.nominal_voltage_v,
        )

    def wake(self) -> None:
        self._wake.set()

    def apply_now(self) -> None:
        """A command changed the limits: evaluate at once, so that the feed of a new limit is
        the next thing the event loop runs (the vehicle waits for it); limits.json is written
        right after it, and the control task recomputes its next wake-up."""
        self.evaluate(self._clock())
        asyncio.get_running_loop().call_soon(self.persist)
        self.wake()

    def session_started(self, cid: int, at: float) -> None:
        self.connectors[cid].session_start = at
        self.wake()

    def session_ended(self, cid: int) -> None:
        self.connectors[cid].session_start = None
        ended = self.engine.end_session()
        for p in ended:
            self._events.event("commandCompleted", ref_of(p), cid)
        if ended:
            self.persist()
        self.wake()

    def set_site_limit(self, cid: int, limit_a: float | None) -> None:
        self.connectors[cid].site_limit_a = limit_a
        self.wake()

    # --- command outcomes ------------------------------------------------------------------

    def superseded(self, old: tuple[ChargingProfile, ...], new: ChargingProfile | None) -> None:
        for p in old:
            self._started.discard(p.profile_id)
            body = CommandSupersededBody(
                **ref_of(p).model_dump(), superseded_by=ref_of(new) if new else ref_of(p))
            self._events.event("commandSuperseded", body, p.connector)

    def cleared(self, removed: list[ChargingProfile], by: str | None) -> None:
        for p in removed:
            self._started.discard(p.profile_id)
            body = CommandClearedBody(**ref_of(p).model_dump(), cleared_by=by)
            self._events.event("commandCleared", body, p.connector)
        self.persist()
        self.wake()

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            now = self._clock()
            wake_at = self.evaluate(now)
            timeout = MAX_SLEEP_S if wake_at is None else max(0.0, min(wake_at - now,
                                                                        MAX_SLEEP_S))
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout + 0.001):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def evaluate(self, now: float) -> float | None:
        """Apply the composite at ``now``; returns when the next change may happen."""
        self._lifecycle(now)
        nxt: list[float] = []
        changed = False
        inputs = {cid: self._station_input(cid) for cid in self.connectors}
        targets = self.engine.station(now, inputs)
        lower: list[tuple[ConnectorInputs, float | None]] = []
        higher: list[tuple[ConnectorInputs, float | None]] = []
        books: list[tuple[int, ConnectorInputs, EffectiveLimit, EffectiveLimit | None]] = []
        for cid, c in self.connectors.items():
            ctx = inputs[cid].ctx
            eff = self.engine.effective_limit(now, cid, ctx, targets[cid])
            limit = 0.0 if self.decommissioned else eff.limit_a
            if eff.drawn is not None and c.tracker is not None:
                c.tracker.random_delay(now, eff.drawn.drawn_s)
                c.tracker.updated(ev_letter(c.controller.machine.ev_level), 0.0,
                                  eff.target.limit_a or 0.0, api_source(eff.target.source),
                                  eff.drawn.drawn_s)
            prev = c.effective
            c.effective = eff
            if limit != c.fed_limit:
                (lower if _below(limit, c.fed_limit) else higher).append((c, limit))
                c.fed_limit = limit
                changed = True
                books.append((cid, c, eff, prev))
            t = self.engine.next_change_after(now, cid, ctx)
            if t is not None:
                nxt.append(t)
            if eff.pending is not None:
                nxt.append(eff.pending.until)
        if lower or higher:
            loop = asyncio.get_running_loop()
            feed = loop.create_task(self._feed(lower, higher))
            self._feeds.add(feed)
            feed.add_done_callback(self._feeds.discard)
            # The session record's bookkeeping (a ledger write) is scheduled after the feed
            # task: it is not what the vehicle waits for.
            for cid, c, eff, prev in books:
                loop.call_soon(self._curtailment, cid, c, eff, prev, now)
        self._failsafe(now)
        if changed:
            self._on_change()
        return min(nxt) if nxt else None

    def _station_input(self, cid: int) -> StationInput:
        m = self.connectors[cid].controller.machine
        plugged = self.connectors[cid].session_start is not None and m.state is not PilotState.FAULT
        return StationInput(self.context(cid), plugged,
                            m.ev_level in (CpLevel.STATE_3, CpLevel.STATE_D))

    @staticmethod
    async def _feed(lower: list[tuple[ConnectorInputs, float | None]],
                    higher: list[tuple[ConnectorInputs, float | None]]) -> None:
        """Decreases are on the wire before increases: when siteMax moves a share from one
        connector to another, the sum of the offers never exceeds it, even for a moment."""
        for group in (lower, higher):
            if len(group) == 1:  # in this task: no extra hop before the duty write
                await group[0][0].controller.feed(LimitChanged(group[0][1]))
            elif group:
                await asyncio.gather(*(c.controller.feed(LimitChanged(limit))
                                       for c, limit in group))

    def _curtailment(self, cid: int, c: ConnectorInputs, eff: EffectiveLimit,
                     prev: EffectiveLimit | None, now: float) -> None:
        if c.tracker is None:
            return
        t = eff.target
        old = prev.target if prev is not None else None
        if old is not None and (old.command_id or old.profile_id) and (
                old.command_id, old.profile_id) != (t.command_id, t.profile_id):
            self._record_curtailment(c, old.command_id, old.profile_id, old.limit_a, now,
                                     ended=True)
        if t.command_id or t.profile_id:
            self._record_curtailment(c, t.command_id, t.profile_id, t.limit_a, now, ended=False)

    def _record_curtailment(self, c: ConnectorInputs, command_id: str | None,
                            profile_id: str | None, limit_a: float | None, now: float,
                            *, ended: bool) -> None:
        assert c.tracker is not None
        source, sid = ("commandId", command_id) if command_id else ("profileId", profile_id)
        assert sid is not None
        key = (source, sid)
        starts = c.tracker.curtailment_starts
        if ended:
            start = starts.pop(key, None)
            if start is not None:
                c.tracker.curtailment(source, sid, start,
                                      {"value": limit_a or 0.0, "unit": "A"}, to_at=now)
        elif key not in starts:
            starts[key] = now
            c.tracker.curtailment(source, sid, now, {"value": limit_a or 0.0, "unit": "A"})

    def _lifecycle(self, now: float) -> None:
        """commandStarted once a lease/profile is in force; completed/expired when it lapses."""
        removed = self.engine.purge_expired(now)
        for p in removed:
            kind = "commandCompleted" if p.profile_id in self._started else "commandExpired"
            self._started.discard(p.profile_id)
            self._events.event(kind, ref_of(p), p.connector)
        if removed:
            self.persist()
        for inst in self.engine.installed:
            p = inst.profile
            start = (p.valid_from if p.valid_from is not None else inst.installed_at)
            start += inst.start_delay_s
            if p.profile_id in self._started or now < start:
                continue
            self._started.add(p.profile_id)
            applied = self._applied_a(p.connector, now)
            body = CommandStartedBody(
                **ref_of(p).model_dump(),
                applied_limit=commanded_limit(p),
                applied_limit_a=applied,
                random_delay_s=round(inst.start_delay_s),
            )
            self._events.event("commandStarted", body, p.connector)

    def _applied_a(self, connector: int | None, now: float) -> float | None:
        cid = connector if connector in self.connectors else next(iter(self.connectors))
        comp = self.engine.composite(now, cid, self.context(cid))
        if comp.limit_a is None or not math.isfinite(comp.limit_a):
            return None
        return round(comp.limit_a, 2)

    def _failsafe(self, now: float) -> None:
        cid = next(iter(self.connectors))
        active = self.engine.failsafe_active(now, self.context(cid))
        fs = self.engine.failsafe
        if active and self._failsafe_since is None and fs is not None:
            self._failsafe_since = now
            unit = "A" if fs.unit is RateUnit.A else "W"
            self._events.event("failsafeEntered", from_wire(FailsafeEnteredBody,
                {"afterS": max(1, round(fs.after_s)), "limit": {"value": fs.limit,
                                                                 "unit": unit}}))
            log.warning("failsafe_entered", after_s=fs.after_s, limit=fs.limit, unit=unit)
        elif not active and self._failsafe_since is not None:
            duration = now - self._failsafe_since
            self._failsafe_since = None
            self._events.event("failsafeExited", FailsafeExitedBody(duration_s=round(duration)))
            log.info("failsafe_exited", duration_s=round(duration, 1))

    @property
    def failsafe_since(self) -> float | None:
        return self._failsafe_since

    def snapshot_limits(self, cid: int) -> dict[str, Any]:
        c = self.connectors[cid]
        eff = c.effective
        if eff is None:
            return {"limitA": 0.0, "limitSource": "none"}
        t = eff.target
        out: dict[str, Any] = {
            "limitA": round(eff.limit_a, 2) if eff.limit_a is not None else c.rated_a,
            "limitSource": api_source(t.source) if t.source != "none" else "hardware",
        }
        if t.command_id or t.profile_id:
            out["limitRef"] = ({"commandId": t.command_id} if t.command_id
                               else {"profileId": t.profile_id})
        return out

    def active_profiles(self) -> list[dict[str, Any]]:
        out = []
        for inst in self.engine.installed:
            p = inst.profile
            item: dict[str, Any] = ref_of(p).model_dump(by_alias=True, exclude_none=True)
            item.update({"layer": p.layer.value, "stackLevel": p.stack_level})
            if p.valid_from is not None:
                item["validFrom"] = rfc3339(p.valid_from)
            if p.valid_to is not None:
                item["validTo"] = rfc3339(p.valid_to)
            out.append(item)
        return out
