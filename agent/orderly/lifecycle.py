"""The events that follow a command after its reply: started, completed or expired; fail-safe.

``commandStarted`` goes out once a lease or profile is in force (after its start and its random
delay), ``commandCompleted``/``commandExpired`` when it lapses, ``failsafeEntered``/``Exited``
as the link's absence crosses the fail-safe threshold. This remembers what was announced (so
each event goes out once) and hands the events back; ``OrderlyControl`` journals them or puts
them in a command's ``Applied``.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from agent.api.models import CommandStartedBody, FailsafeEnteredBody, FailsafeExitedBody
from agent.limits import FailsafeConfig, LimitsEngine, RateUnit
from agent.orderly.applied import Journaled
from agent.orderly.events import from_wire
from agent.orderly.refs import commanded_limit, ref_of

log = structlog.get_logger("agent.orderly")


class CommandLifecycle:
    """Which profiles were announced started, and since when fail-safe has been in force."""

    def __init__(self) -> None:
        self._started: set[str] = set()
        self.failsafe_since: float | None = None

    def forget(self, profile_id: str) -> None:
        """A cleared or superseded profile: it was answered for, no completed/expired follows."""
        self._started.discard(profile_id)

    def step(self, engine: LimitsEngine, now: float,
             applied_a: Callable[[int | None], float | None]) -> tuple[list[Journaled], bool]:
        """Purges what lapsed and announces what began; ``applied_a(connector)`` is the
        composite in force there. Returns the events and whether profiles were removed
        (limits.json to be written)."""
        events: list[Journaled] = []
        removed = engine.purge_expired(now)
        for p in removed:
            kind = "commandCompleted" if p.profile_id in self._started else "commandExpired"
            self._started.discard(p.profile_id)
            events.append(Journaled(kind, ref_of(p), p.connector))
        for inst in engine.installed:
            p = inst.profile
            start = (p.valid_from if p.valid_from is not None else inst.installed_at)
            start += inst.start_delay_s
            if p.profile_id in self._started or now < start:
                continue
            self._started.add(p.profile_id)
            body = CommandStartedBody(
                **ref_of(p).model_dump(),
                applied_limit=commanded_limit(p),
                applied_limit_a=applied_a(p.connector),
                random_delay_s=round(inst.start_delay_s),
            )
            events.append(Journaled("commandStarted", body, p.connector))
        return events, bool(removed)

    def failsafe(self, active: bool, fs: FailsafeConfig | None, now: float) -> Journaled | None:
        """failsafeEntered/Exited when the engine's fail-safe state changes."""
        if active and self.failsafe_since is None and fs is not None:
            self.failsafe_since = now
            unit = "A" if fs.unit is RateUnit.A else "W"
            log.warning("failsafe_entered", after_s=fs.after_s, limit=fs.limit, unit=unit)
            return Journaled("failsafeEntered", from_wire(FailsafeEnteredBody,
                {"afterS": max(1, round(fs.after_s)), "limit": {"value": fs.limit,
                                                                 "unit": unit}}))
        if not active and self.failsafe_since is not None:
            duration = now - self.failsafe_since
            self.failsafe_since = None
            log.info("failsafe_exited", duration_s=round(duration, 1))
            return Journaled("failsafeExited", FailsafeExitedBody(duration_s=round(duration)))
        return None
