"""What the orderly port hands back: plain data, so the caller does the I/O in the right order.

A command goes in (``OrderlyControl.set_limit`` and friends), an ``Applied`` comes out: the
reply's fields, the limits to feed (``Plan``) and the events to journal. The command handler
awaits ``OrderlyControl.carry_out(applied)`` (the duty is on the wire, then the events are
journaled and the books kept) and only then builds and publishes its reply: the order the
contract asks for (mqtt-api.md, replies) is the order of the code, with no task scheduling
trick in between. The control task's own re-evaluations go the same way with a ``Plan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from agent.api.reasons import Reason, ReplyStatus
from agent.limits import EffectiveLimit
from agent.shell.handle import ConnectorHandle

__all__ = ["Applied", "Feed", "Journaled", "Plan", "Retarget"]


@dataclass(frozen=True, slots=True)
class Feed:
    """Limits to put on the wire. Decreases go first: when siteMax moves a share from one
    connector to another, the sum of the offers never exceeds it, even for a moment."""

    lower: tuple[tuple[ConnectorHandle, float | None], ...] = ()
    higher: tuple[tuple[ConnectorHandle, float | None], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.lower or self.higher)


@dataclass(frozen=True, slots=True)
class Retarget:
    """A connector's effective limit changed: its session record notes the curtailment."""

    connector: int
    effective: EffectiveLimit
    previous: EffectiveLimit | None
    at: float


@dataclass(frozen=True, slots=True)
class Plan:
    """One evaluation of the composite: what to feed, what to book, when to look again."""

    wake_at: float | None = None
    feed: Feed = field(default_factory=Feed)
    retargets: tuple[Retarget, ...] = ()
    persist: bool = False  # limits.json changed


@dataclass(frozen=True, slots=True)
class Journaled:
    """An event to journal (``EventLog.event``) once the feed is on the wire."""

    type: str
    body: BaseModel
    connector: int | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """The result of one command: reply fields, the plan to carry out, the events to journal."""

    status: ReplyStatus
    reason: Reason
    detail: str | None = None
    extra: dict[str, Any] | None = None
    plan: Plan = field(default_factory=Plan)
    events: tuple[Journaled, ...] = ()
