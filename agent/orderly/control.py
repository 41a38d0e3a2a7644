"""Orderly charging: the limits engine's composite, fed to each connector's pilot machine.

The engine is pure; this class is its one port. It owns the engine's clock (wall time, since
profiles carry dates), its persistence (``limits.json``, written atomically on every change)
and the events that tell the aggregator what happened to its commands: started (with the limit
applied and the random delay drawn), superseded, cleared, completed, expired; fail-safe
entered/exited (those that follow a reply are kept by agent/orderly/lifecycle.py). A command
goes in (``set_limit``, ``set_profile``, ``clear``) and an ``Applied`` comes out;
``carry_out`` then feeds the limits (awaited: on the wire before the reply), journals the
events and keeps the books. The control task wakes when the engine says the composite may
change, when a command arrives, or when the context changes (plug-in, link up/down), never on
a fixed poll, and carries out its own ``Plan`` the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel

from agent.api.models import CommandClearedBody, CommandSupersededBody
from agent.api.reasons import Reason, ReplyStatus
from agent.errors import ConfigError
from agent.limits import (
    ApplyResult,
    ChargeContext,
    ChargingProfile,
    CompositePeriod,
    EffectiveLimit,
    EngineConfig,
    FailsafeConfig,
    Layer,
    LimitsEngine,
    LinkState,
    LocalLimits,
    RateUnit,
    StationInput,
)
from agent.limits import Status as LimitStatus
from agent.orderly.applied import Applied, Feed, Journaled, Plan, Retarget
from agent.orderly.events import EventLog, ev_letter
from agent.orderly.lifecycle import CommandLifecycle
from agent.orderly.refs import api_source, limit_snapshot, profile_list, ref_of
from agent.orderly.sessions import SessionTracker
from agent.pilot import LimitChanged, PilotState
from agent.pilot.classifier import CpLevel
from agent.shell.handle import ConnectorHandle
from agent.store import atomic_write
from agent.writer import shared_writer

log = structlog.get_logger("agent.orderly")

MAX_SLEEP_S = 5.0
_REPLY = {LimitStatus.REJECTED: ReplyStatus.REJECTED,
          LimitStatus.NOT_SUPPORTED: ReplyStatus.NOT_SUPPORTED}


def _below(new: float | None, old: float | None) -> bool:
    """Whether feeding ``new`` after ``old`` lowers the offer (None: no ceiling)."""
    return new is not None and (old is None or new < old)


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
        self._collected: list[Journaled] | None = None  # a command's events, for its Applied
        self._lifecycle = CommandLifecycle()
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

    # --- the port: commands in, Applied out -------------------------------------------------

    def set_limit(self, command_id: str, value: float, unit: str, duration_s: float, now: float,
                  **opts: Any) -> Applied:
        """A setLimit lease (``opts``: start_at, priority, dsr, randomize_start_s, connector)."""
        with self._collecting() as events:
            res = self.engine.set_limit(command_id, value, unit, duration_s, now, **opts)
            return self._installed(res, now, events)

    def set_profile(self, profile: ChargingProfile, connector: int, now: float) -> Applied:
        """A setProfile; a session-layer one binds to the session running on ``connector``."""
        with self._collecting() as events:
            res = self.engine.apply_profile(
                profile, now, session_start=self.connectors[connector].session_start)
            return self._installed(res, now, events)

    def clear(self, by: str, now: float, *, profile_id: str | None = None,
              layer: Layer | None = None, stack_level: int | None = None) -> Applied:
        """clearProfile by id (a setLimit is addressed by its command id) or by layer/level."""
        with self._collecting() as events:
            if profile_id is not None:
                removed = (self.engine.clear(profile_id=profile_id)
                           or self.engine.clear(profile_id=f"cmd:{profile_id}"))
            else:
                removed = self.engine.clear(layer=layer, stack_level=stack_level)
            for p in removed:
                self._lifecycle.forget(p.profile_id)
                body = CommandClearedBody(**ref_of(p).model_dump(), cleared_by=by)
                self._event("commandCleared", body, p.connector)
            plan = self.evaluate(now, persist=bool(removed))
        if not removed:
            return Applied(ReplyStatus.UNKNOWN, Reason.OK, "nothing matched", plan=plan,
                           events=tuple(events))
        return Applied(ReplyStatus.ACCEPTED, Reason.OK, plan=plan, events=tuple(events))

    def composite_schedule(self, cid: int, unit: RateUnit, horizon_s: float,
                           now: float) -> list[CompositePeriod]:
        return self.engine.composite_schedule(now, horizon_s, unit, cid, self.context(cid))

    def unconstrained(self, cid: int, unit: RateUnit) -> float:
        """What a period without any limit means on ``cid``: its rating, in ``unit``."""
        rated = self.connectors[cid].rated_a
        if unit is RateUnit.A:
            return rated
        return round(rated * self.context(cid).volt_sum(self.engine.config.nominal_voltage_v), 1)

    def _installed(self, res: ApplyResult, now: float, events: list[Journaled]) -> Applied:
        if res.status is not LimitStatus.ACCEPTED:
            return Applied(_REPLY[res.status], Reason(res.reason.value), events=tuple(events))
        for p in res.superseded:
            self._lifecycle.forget(p.profile_id)
            new = res.profile
            body = CommandSupersededBody(
                **ref_of(p).model_dump(), superseded_by=ref_of(new) if new else ref_of(p))
            self._event("commandSuperseded", body, p.connector)
        plan = self.evaluate(now, persist=True)
        return Applied(ReplyStatus.ACCEPTED, Reason.OK, plan=plan, events=tuple(events))

    @contextlib.contextmanager
    def _collecting(self) -> Iterator[list[Journaled]]:
        """Events raised meanwhile go into the command's ``Applied`` instead of the journal."""
        events: list[Journaled] = []
        self._collected = events
        try:
            yield events
        finally:
            self._collected = None
        self.wake()  # the control task recomputes its next wake-up

    def _event(self, type_: str, body: BaseModel, connector: int | None = None) -> None:
        if self._collected is not None:
            self._collected.append(Journaled(type_, body, connector))
        else:
            self._events.event(type_, body, connector)

    async def carry_out(self, applied: Applied | Plan, *, settle: bool = True) -> None:
        """The feed first (awaited: the duty is on the wire), then the events, the session
        records' curtailments, limits.json and the state snapshot: none of that is what the
        vehicle waits for.
        They go to the store writer; for a command (``Applied``) this then waits until they are
        committed (the reply's ``atSeq`` names them), unless ``settle`` is False (the caller
        awaits ``EventLog.settled`` itself); the event loop never waits."""
        plan = applied.plan if isinstance(applied, Applied) else applied
        await self._feed(plan.feed)
        if isinstance(applied, Applied):
            for e in applied.events:
                self._events.event(e.type, e.body, e.connector)
        for r in plan.retargets:
            tracker = self.connectors[r.connector].tracker
            if tracker is not None:
                prev = r.previous.target if r.previous is not None else None
                tracker.retarget(r.effective.target, prev, r.at)
        if plan.persist:
            self.persist()
        if plan.retargets:  # the state snapshot, built and encoded: after the duty write
            self._on_change()
        if settle and isinstance(applied, Applied):
            await self._events.settled()

    def session_started(self, cid: int, at: float) -> None:
        self.connectors[cid].session_start = at
        self.wake()

    def session_ended(self, cid: int) -> None:
        self.connectors[cid].session_start = None
        ended = self.engine.end_session()
        for p in ended:
            self._event("commandCompleted", ref_of(p), cid)
        if ended:
            self.persist()
        self.wake()

    def set_site_limit(self, cid: int, limit_a: float | None) -> None:
        self.connectors[cid].site_limit_a = limit_a
        self.wake()

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            # cleared before the evaluation, never after the feed: a change that arrives while
            # the feed is awaited (an installer limit as charging starts) must wake us again
            self._wake.clear()
            now = self._clock()
            plan = self.evaluate(now)
            await self.carry_out(plan)
            wake_at = plan.wake_at
            timeout = MAX_SLEEP_S if wake_at is None else max(0.0, min(wake_at - now,
                                                                        MAX_SLEEP_S))
            try:
                async with asyncio.timeout(timeout + 0.001):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def evaluate(self, now: float, *, persist: bool = False) -> Plan:
        """The composite at ``now``: what to feed where, and when the next change may happen.
        Pure bookkeeping on the engine; the I/O is ``carry_out``'s."""
        events, removed = self._lifecycle.step(self.engine, now,
                                               lambda cid: self._applied_a(cid, now))
        for e in events:
            self._event(e.type, e.body, e.connector)
        persist = removed or persist
        nxt: list[float] = []
        inputs = {cid: self._station_input(cid) for cid in self.connectors}
        targets = self.engine.station(now, inputs)
        lower: list[tuple[ConnectorHandle, float | None]] = []
        higher: list[tuple[ConnectorHandle, float | None]] = []
        retargets: list[Retarget] = []
        for cid, c in self.connectors.items():
            ctx = inputs[cid].ctx
            eff = self.engine.effective_limit(now, cid, ctx, targets[cid])
            limit = 0.0 if self.decommissioned else eff.limit_a
            if eff.drawn is not None and c.tracker is not None:
                c.tracker.random_delay(now, eff.drawn.drawn_s)
                c.tracker.updated(ev_letter(c.controller.machine.ev_level), 0.0,
                                  eff.target.limit_a or 0.0, api_source(eff.target.source),
                                  eff.drawn.drawn_s)
            prev, c.effective = c.effective, eff
            if limit != c.fed_limit:
                (lower if _below(limit, c.fed_limit) else higher).append((c.controller, limit))
                c.fed_limit = limit
                retargets.append(Retarget(cid, eff, prev, now))
            t = self.engine.next_change_after(now, cid, ctx)
            if t is not None:
                nxt.append(t)
            if eff.pending is not None:
                nxt.append(eff.pending.until)
        self._failsafe(now)
        return Plan(min(nxt) if nxt else None, Feed(tuple(lower), tuple(higher)),
                    tuple(retargets), persist)

    def _station_input(self, cid: int) -> StationInput:
        m = self.connectors[cid].controller.machine
        plugged = self.connectors[cid].session_start is not None and m.state is not PilotState.FAULT
        return StationInput(self.context(cid), plugged,
                            m.ev_level in (CpLevel.STATE_3, CpLevel.STATE_D))

    async def _feed(self, feed: Feed) -> None:
        """Decreases are on the wire before increases (``Feed``). Each connector gets the limit
        of the newest evaluation, not the one of this plan: a command's plan and the control
        task's may be carried out in either order, and an older one must not win."""
        for group in (feed.lower, feed.higher):
            if len(group) == 1:  # in this task: no extra hop before the duty write
                await self._feed_one(group[0][0])
            elif group:
                await asyncio.gather(*(self._feed_one(ctl) for ctl, _ in group))

    async def _feed_one(self, ctl: ConnectorHandle) -> None:
        limit = self.connectors[ctl.id].fed_limit  # read as the feed is queued: the newest
        await ctl.feed(LimitChanged(limit))

    def _applied_a(self, connector: int | None, now: float) -> float | None:
        cid = connector if connector in self.connectors else next(iter(self.connectors))
        comp = self.engine.composite(now, cid, self.context(cid))
        if comp.limit_a is None or not math.isfinite(comp.limit_a):
            return None
        return round(comp.limit_a, 2)

    def _failsafe(self, now: float) -> None:
        cid = next(iter(self.connectors))
        active = self.engine.failsafe_active(now, self.context(cid))
        e = self._lifecycle.failsafe(active, self.engine.failsafe, now)
        if e is not None:
            self._event(e.type, e.body)

    @property
    def failsafe_since(self) -> float | None:
        return self._lifecycle.failsafe_since

    def snapshot_limits(self, cid: int) -> dict[str, Any]:
        c = self.connectors[cid]
        return limit_snapshot(c.effective, c.rated_a)

    def active_profiles(self) -> list[dict[str, Any]]:
        return profile_list(self.engine.installed)
