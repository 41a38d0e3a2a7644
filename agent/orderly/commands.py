"""Commands from the aggregator: parse, check the envelope, apply, reply (mqtt-api.md).

Order, and why: the payload is parsed (``INVALID_SCHEMA`` and friends) and the envelope checked
(duplicate first, so a QoS 1 redelivery is answered ``duplicate`` and never applied twice; then
signature, expiry, clock skew, replay) before anything changes. Every refusal gets a reply with a
stable reason; security refusals also become a ``securityReject`` event and a security-log line.
The reply goes out within one control cycle; the lifecycle follows as events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from agent.api import models as m
from agent.api.envelope import EnvelopeChecker, Verdict, parse_command_with_source
from agent.api.reasons import Reason, ReplyStatus, StopReason
from agent.errors import ProtocolError
from agent.limits import (
    ChargingProfile,
    Layer,
    Period,
    ProfileKind,
    RateUnit,
    Recurrency,
    Schedule,
)
from agent.limits import Reason as LimitReason
from agent.limits import Status as LimitStatus
from agent.orderly.control import OrderlyControl, api_source
from agent.orderly.events import EventLog
from agent.orderly.security import SecurityLog
from agent.pilot import Authorize, StopRequested

log = structlog.get_logger("agent.commands")

ResultFields = dict[str, Any]


@dataclass
class Outcome:
    status: ReplyStatus
    reason: Reason
    detail: str | None = None
    extra: ResultFields | None = None


@dataclass
class RuntimeHooks:
    """What commands reach outside the limits engine (wired by the service)."""

    connectors: list[int]
    plugged: Callable[[int], bool]
    feed: Callable[[int, Any], Awaitable[object]]
    set_config: Callable[[m.SetConfigCommand], Awaitable[int]]
    resync: Callable[[int], Awaitable[int]]
    decommission: Callable[[], Awaitable[None]]
    stop_origin: Callable[[int, StopReason], None]


def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


class CommandService:
    def __init__(self, *, device_id: str, checker: EnvelopeChecker, control: OrderlyControl,
                 events: EventLog, security: SecurityLog, hooks: RuntimeHooks,
                 clock: Callable[[], float] = time.time) -> None:
        self.device_id = device_id
        self._checker = checker
        self._control = control
        self._events = events
        self._security = security
        self._hooks = hooks
        self._clock = clock

    async def handle(self, payload: bytes, *, group: str | None = None) -> m.Reply:
        now = self._clock()
        try:
            cmd, raw = parse_command_with_source(payload)
        except ProtocolError as exc:
            reason = Reason(exc.reason)
            self._security.record("rejected", reason=reason.value, detail=exc.message,
                                  command_id=exc.context.get("command_id"),
                                  issuer=exc.context.get("issuer"))
            cid = exc.context.get("command_id")
            return m.Reply(command_id=cid if isinstance(cid, str) else None,
                           device_id=self.device_id, status=ReplyStatus.REJECTED,
                           reason=reason, detail=exc.message, at_seq=self._events.last_seq)
        verdict = self._checker.check(cmd, raw, datetime.fromtimestamp(now, UTC))
        if not verdict.proceed:
            return self._refused(cmd, verdict)
        try:
            outcome = await self._apply(cmd, now)
        except ProtocolError as exc:
            outcome = Outcome(ReplyStatus.REJECTED, Reason(exc.reason), exc.message)
        except Exception as exc:  # the reply must still go out; the agent keeps running
            log.exception("command_failed", command_id=cmd.id, type=cmd.type)
            outcome = Outcome(ReplyStatus.REJECTED, Reason.INTERNAL_ERROR, type(exc).__name__)
        await asyncio.sleep(0)  # a limit fed by the command reaches the wire before the reply
        await self._events.settled()  # the events it journaled are committed: atSeq names them
        reply = m.Reply(
            command_id=cmd.id, device_id=self.device_id, status=outcome.status,
            reason=outcome.reason, detail=outcome.detail,
            applied_at=datetime.fromtimestamp(now, UTC)
            if outcome.status is ReplyStatus.ACCEPTED else None,
            at_seq=self._events.last_seq, **(outcome.extra or {}))
        self._checker.commit(cmd, verdict, reply)
        log.info("command_applied", command_id=cmd.id, type=cmd.type, issuer=cmd.issuer,
                 group=group, status=reply.status.value, reason=reply.reason.value)
        if outcome.status is not ReplyStatus.ACCEPTED:
            self._security.record(outcome.status.value, reason=outcome.reason.value,
                                  command_id=cmd.id, issuer=cmd.issuer, detail=outcome.detail)
        return reply

    def _refused(self, cmd: m.Command, verdict: Verdict) -> m.Reply:
        if verdict.record:  # authentic and fresh, refused on content (discharge, confirm)
            reply = verdict.reply(at_seq=self._events.last_seq)
            self._checker.commit(cmd, verdict, reply)
            return reply
        if verdict.security_reject:
            self._events.event("securityReject", verdict.security_body(cmd), cmd.connector)
        if verdict.status is not ReplyStatus.DUPLICATE:
            self._security.record("rejected", reason=verdict.reason.value, command_id=cmd.id,
                                  issuer=cmd.issuer, detail=verdict.detail,
                                  security=verdict.security_reject)
        log.info("command_refused", command_id=cmd.id, type=cmd.type,
                 status=verdict.status.value, reason=verdict.reason.value)
        return verdict.reply(at_seq=self._events.last_seq)

    # --- dispatch ------------------------------------------------------------------------

    async def _apply(self, cmd: m.Command, now: float) -> Outcome:
        ok = Outcome(ReplyStatus.ACCEPTED, Reason.OK)
        targets = self._targets(cmd.connector)
        if isinstance(cmd, m.SetLimitCommand):
            b = cmd.body
            res = self._control.engine.set_limit(
                cmd.id, b.limit.value, b.limit.unit, b.duration_s, now,
                start_at=_ts(b.start_at), priority=b.priority, dsr=b.dsr,
                randomize_start_s=b.randomize_start_s or None, connector=cmd.connector)
            return self._applied(res.status, res.reason, res.superseded, res.profile)
        if isinstance(cmd, m.SetProfileCommand):
            profile = _profile(cmd, self._control)
            session = self._control.connectors[targets[0]].session_start
            res = self._control.engine.apply_profile(profile, now, session_start=session)
            return self._applied(res.status, res.reason, res.superseded, res.profile)
        if isinstance(cmd, m.ClearProfileCommand):
            clear = cmd.body
            if isinstance(clear, m.ClearProfileById):
                removed = self._control.engine.clear(profile_id=clear.profile_id)
                if not removed:  # a setLimit is addressed by its command id
                    removed = self._control.engine.clear(profile_id=f"cmd:{clear.profile_id}")
            else:
                removed = self._control.engine.clear(
                    layer=Layer(clear.layer) if clear.layer else None,
                    stack_level=clear.stack_level)
            self._control.cleared(removed, cmd.id)
            return ok if removed else Outcome(ReplyStatus.UNKNOWN, Reason.OK, "nothing matched")
        if isinstance(cmd, m.GetCompositeCommand):
            return Outcome(ReplyStatus.ACCEPTED, Reason.OK,
                           extra={"composite": self._composite(cmd, targets, now)})
        if isinstance(cmd, m.StartSessionCommand | m.StopSessionCommand):
            return await self._session(cmd, targets)
        if isinstance(cmd, m.SetConfigCommand):
            version = await self._hooks.set_config(cmd)
            return Outcome(ReplyStatus.ACCEPTED, Reason.OK, extra={"config_version": version})
        if isinstance(cmd, m.ResyncCommand):
            count = await self._hooks.resync(cmd.body.from_seq)
            return Outcome(ReplyStatus.ACCEPTED, Reason.OK, f"{count} events republished")
        if isinstance(cmd, m.DecommissionCommand):
            await self._hooks.decommission()
            return ok
        raise ProtocolError(f"unhandled type {cmd.type}", reason=Reason.INVALID_SCHEMA.value)

    def _targets(self, connector: int | None) -> list[int]:
        if connector is None:
            return list(self._hooks.connectors)
        if connector not in self._hooks.connectors:
            raise ProtocolError(f"no connector {connector}",
                                reason=Reason.LOCAL_CONSTRAINT.value)
        return [connector]

    def _applied(self, status: LimitStatus, reason: LimitReason,
                 superseded: tuple[ChargingProfile, ...],
                 profile: ChargingProfile | None) -> Outcome:
        if status is not LimitStatus.ACCEPTED:
            mapped = {LimitStatus.REJECTED: ReplyStatus.REJECTED,
                      LimitStatus.NOT_SUPPORTED: ReplyStatus.NOT_SUPPORTED}[status]
            return Outcome(mapped, Reason(reason.value))
        self._control.superseded(superseded, profile)
        self._control.apply_now()
        return Outcome(ReplyStatus.ACCEPTED, Reason.OK)

    def _composite(self, cmd: m.GetCompositeCommand, targets: list[int],
                   now: float) -> list[dict[str, Any]]:
        unit = RateUnit.A if cmd.body.unit == "A" else RateUnit.W
        out = []
        for cid in targets:
            periods = self._control.engine.composite_schedule(
                now, cmd.body.horizon_s, unit, cid, self._control.context(cid))
            rows = []
            for p in periods:
                row: dict[str, Any] = {"offset_s": round(p.start - now),
                                       "limit": round(p.limit, 2) if p.limit is not None
                                       else self._unconstrained(cid, unit),
                                       "source": api_source(p.source) if p.source != "none"
                                       else "hardware"}
                rows.append(row)
            out.append({"connector": cid, "start_at": datetime.fromtimestamp(now, UTC),
                        "duration_s": cmd.body.horizon_s, "unit": cmd.body.unit,
                        "periods": rows})
        return out

    def _unconstrained(self, cid: int, unit: RateUnit) -> float:
        rated = self._control.connectors[cid].rated_a
        if unit is RateUnit.A:
            return rated
        volts = self._control.context(cid).volt_sum(self._control.engine.config.nominal_voltage_v)
        return round(rated * volts, 1)

    async def _session(self, cmd: m.StartSessionCommand | m.StopSessionCommand,
                       targets: list[int]) -> Outcome:
        live = [c for c in targets if self._hooks.plugged(c)]
        if not live:
            return Outcome(ReplyStatus.REJECTED, Reason.NO_ACTIVE_SESSION, "no EV connected")
        for cid in live:
            if isinstance(cmd, m.StartSessionCommand):
                await self._hooks.feed(cid, Authorize(cmd.body.id_tag))
            else:
                self._hooks.stop_origin(cid, StopReason.REMOTE)
                await self._hooks.feed(cid, StopRequested("Remote"))
        return Outcome(ReplyStatus.ACCEPTED, Reason.OK)


def _profile(cmd: m.SetProfileCommand, control: OrderlyControl) -> ChargingProfile:
    b = cmd.body
    s = b.schedule
    return ChargingProfile(
        profile_id=b.profile_id,
        layer=Layer(b.layer),
        stack_level=b.stack_level,
        kind=ProfileKind(b.kind),
        schedule=Schedule(
            unit=RateUnit(s.unit),
            periods=tuple(Period(float(p.offset_s), p.limit, p.phases) for p in s.periods),
            start_at=_ts(s.start_at),
            duration_s=float(s.duration_s) if s.duration_s else None,
            randomize_start_s=float(s.randomize_start_s) or None,
        ),
        recurrency=Recurrency(b.recurrency) if b.recurrency else None,
        valid_from=_ts(b.valid_from),
        valid_to=_ts(b.valid_to),
        max_offline_s=float(b.max_offline_s) if b.max_offline_s else None,
        connector=cmd.connector,
        source_command_id=None,
    )
