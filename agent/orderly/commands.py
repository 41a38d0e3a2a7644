"""Commands from the aggregator: parse, check the envelope, apply, reply (mqtt-api.md).

Order, and why: the payload is parsed (``INVALID_SCHEMA`` and friends) and the envelope checked
(duplicate first, so a QoS 1 redelivery is answered ``duplicate`` and never applied twice; then
signature, expiry, clock skew, replay) before anything changes. Every refusal gets a reply with a
stable reason; security refusals also become a ``securityReject`` event and a security-log line.
A command goes into the orderly port (``OrderlyControl``) and an ``Applied`` comes out; the
handler awaits ``carry_out`` (the new duty is on the wire, the events queued for the store
writer) and returns; the reply is made in a task of its own once the events are committed, and
recorded: within one control cycle, before the effect is confirmed; the lifecycle follows as
events. Commands are applied one at a time; replies are made in the same order, but the next
command does not wait for an earlier one's fsyncs (a redelivery of a command whose reply is
still being made waits for it, and is answered ``duplicate``). The envelope checker reserves a
command's id and ``seq`` as it is admitted, so the next command is checked against them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

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
from agent.orderly.applied import Applied
from agent.orderly.control import OrderlyControl
from agent.orderly.events import EventLog
from agent.orderly.refs import api_source
from agent.orderly.security import SecurityLog
from agent.pilot import Authorize, StopRequested

log = structlog.get_logger("agent.commands")

_OK = Applied(ReplyStatus.ACCEPTED, Reason.OK)
T = TypeVar("T")


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
        self._last: asyncio.Task[Any] | None = None  # the last command's reply task

    async def handle(self, payload: bytes, *, group: str | None = None,
                     then: Callable[[m.Reply], Awaitable[T]]) -> asyncio.Task[T]:
        """Apply one command, then start its reply: when this returns, the command's new duty
        is on the wire and its events and records are queued for the store writer; the task
        returned waits for them to commit (the reply's ``atSeq`` names them), records the
        reply (dedupe) and runs ``then(reply)``, after every earlier command's task (replies
        and records stay in the order of the commands). Commands are applied one at a time
        (the caller's order) and never wait for an earlier command's fsyncs."""
        now = self._clock()
        try:
            cmd, raw = parse_command_with_source(payload)
        except ProtocolError as exc:
            reason = Reason(exc.reason)
            self._security.record("rejected", reason=reason.value, detail=exc.message,
                                  command_id=exc.context.get("command_id"),
                                  issuer=exc.context.get("issuer"))
            cid, detail = exc.context.get("command_id"), exc.message

            def malformed() -> m.Reply:
                return m.Reply(command_id=cid if isinstance(cid, str) else None,
                               device_id=self.device_id, status=ReplyStatus.REJECTED,
                               reason=reason, detail=detail, at_seq=self._events.last_seq)
            return self._in_order(self._now(malformed), then)
        if self._checker.in_flight(cmd):  # a redelivery while its reply is being recorded:
            await self._replies_recorded()  # then it is answered ``duplicate`` from the store
        verdict = self._checker.check(cmd, raw, datetime.fromtimestamp(now, UTC))
        self._checker.reserve(cmd, verdict)  # its id and seq count for the next command now
        if not verdict.proceed:
            return self._in_order(self._now(lambda: self._refused(cmd, verdict)), then)
        try:
            applied = await self._apply(cmd, now)
        except ProtocolError as exc:
            applied = Applied(ReplyStatus.REJECTED, Reason(exc.reason), exc.message)
        except Exception as exc:  # the reply must still go out; the agent keeps running
            log.exception("command_failed", command_id=cmd.id, type=cmd.type)
            applied = Applied(ReplyStatus.REJECTED, Reason.INTERNAL_ERROR, type(exc).__name__)
        try:
            await self._control.carry_out(applied, settle=False)  # the new duty is on the wire
        except Exception:
            log.exception("command_carry_out_failed", command_id=cmd.id, type=cmd.type)
        return self._in_order(self._recorded(cmd, verdict, applied, now, group), then)

    async def _recorded(self, cmd: m.Command, verdict: Verdict, applied: Applied, now: float,
                        group: str | None) -> m.Reply:
        """The reply once the command's events are committed; its dedupe record queued."""
        try:
            await self._events.settled()
            reply = m.Reply(
                command_id=cmd.id, device_id=self.device_id, status=applied.status,
                reason=applied.reason, detail=applied.detail,
                applied_at=datetime.fromtimestamp(now, UTC)
                if applied.status is ReplyStatus.ACCEPTED else None,
                at_seq=self._events.last_seq, **(applied.extra or {}))
            self._checker.commit(cmd, verdict, reply)
        finally:
            self._checker.release(cmd, verdict)
        log.info("command_applied", command_id=cmd.id, type=cmd.type, issuer=cmd.issuer,
                 group=group, status=reply.status.value, reason=reply.reason.value)
        if applied.status is not ReplyStatus.ACCEPTED:
            self._security.record(applied.status.value, reason=applied.reason.value,
                                  command_id=cmd.id, issuer=cmd.issuer, detail=applied.detail)
        return reply

    async def _now(self, make: Callable[[], m.Reply]) -> m.Reply:
        return make()

    def _in_order(self, reply: Awaitable[m.Reply],
                  then: Callable[[m.Reply], Awaitable[T]]) -> asyncio.Task[T]:
        """``reply`` then ``then``, in a task that starts once the previous command's is done."""
        previous = self._last

        async def run() -> T:
            if previous is not None:
                await asyncio.wait({previous})  # its outcome is its own
            return await then(await reply)
        self._last = task = asyncio.get_running_loop().create_task(run(), name="command-reply")
        return task

    async def _replies_recorded(self) -> None:
        """Every command applied so far has its reply recorded (or failed)."""
        if self._last is not None:
            await asyncio.wait({self._last})

    def _refused(self, cmd: m.Command, verdict: Verdict) -> m.Reply:
        if verdict.record:  # authentic and fresh, refused on content (discharge, confirm)
            reply = verdict.reply(at_seq=self._events.last_seq)
            try:
                self._checker.commit(cmd, verdict, reply)
            finally:
                self._checker.release(cmd, verdict)
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

    async def _apply(self, cmd: m.Command, now: float) -> Applied:
        targets = self._targets(cmd.connector)
        port = self._control
        if isinstance(cmd, m.SetLimitCommand):
            b = cmd.body
            return port.set_limit(
                cmd.id, b.limit.value, b.limit.unit, b.duration_s, now,
                start_at=_ts(b.start_at), priority=b.priority, dsr=b.dsr,
                randomize_start_s=b.randomize_start_s or None, connector=cmd.connector)
        if isinstance(cmd, m.SetProfileCommand):
            return port.set_profile(_profile(cmd), targets[0], now)
        if isinstance(cmd, m.ClearProfileCommand):
            clear = cmd.body
            if isinstance(clear, m.ClearProfileById):
                return port.clear(cmd.id, now, profile_id=clear.profile_id)
            return port.clear(cmd.id, now, layer=Layer(clear.layer) if clear.layer else None,
                              stack_level=clear.stack_level)
        if isinstance(cmd, m.GetCompositeCommand):
            return Applied(ReplyStatus.ACCEPTED, Reason.OK,
                           extra={"composite": self._composite(cmd, targets, now)})
        if isinstance(cmd, m.StartSessionCommand | m.StopSessionCommand):
            return await self._session(cmd, targets)
        if isinstance(cmd, m.SetConfigCommand):
            version = await self._hooks.set_config(cmd)
            return Applied(ReplyStatus.ACCEPTED, Reason.OK, extra={"config_version": version})
        if isinstance(cmd, m.ResyncCommand):
            count = await self._hooks.resync(cmd.body.from_seq)
            return Applied(ReplyStatus.ACCEPTED, Reason.OK, f"{count} events republished")
        if isinstance(cmd, m.DecommissionCommand):
            await self._hooks.decommission()
            return _OK
        raise ProtocolError(f"unhandled type {cmd.type}", reason=Reason.INVALID_SCHEMA.value)

    def _targets(self, connector: int | None) -> list[int]:
        if connector is None:
            return list(self._hooks.connectors)
        if connector not in self._hooks.connectors:
            raise ProtocolError(f"no connector {connector}",
                                reason=Reason.LOCAL_CONSTRAINT.value)
        return [connector]

    def _composite(self, cmd: m.GetCompositeCommand, targets: list[int],
                   now: float) -> list[dict[str, Any]]:
        unit = RateUnit.A if cmd.body.unit == "A" else RateUnit.W
        out = []
        for cid in targets:
            rows = [{"offset_s": round(p.start - now),
                     "limit": round(p.limit, 2) if p.limit is not None
                     else self._control.unconstrained(cid, unit),
                     "source": api_source(p.source) if p.source != "none" else "hardware"}
                    for p in self._control.composite_schedule(cid, unit, cmd.body.horizon_s, now)]
            out.append({"connector": cid, "start_at": datetime.fromtimestamp(now, UTC),
                        "duration_s": cmd.body.horizon_s, "unit": cmd.body.unit,
                        "periods": rows})
        return out

    async def _session(self, cmd: m.StartSessionCommand | m.StopSessionCommand,
                       targets: list[int]) -> Applied:
        live = [c for c in targets if self._hooks.plugged(c)]
        if not live:
            return Applied(ReplyStatus.REJECTED, Reason.NO_ACTIVE_SESSION, "no EV connected")
        for cid in live:
            if isinstance(cmd, m.StartSessionCommand):
                await self._hooks.feed(cid, Authorize(cmd.body.id_tag))
            else:
                self._hooks.stop_origin(cid, StopReason.REMOTE)
                await self._hooks.feed(cid, StopRequested("Remote"))
        return _OK


def _profile(cmd: m.SetProfileCommand) -> ChargingProfile:
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
