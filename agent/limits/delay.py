"""Randomised delay (GB SI 2021/1467 reg 11 style): hold the lower limit before an increase.

One :class:`DelayGate` per connector turns the composite target into the limit actually offered:

| situation (target T, offered E)                         | effect                              |
|---------------------------------------------------------|-------------------------------------|
| no active session                                       | offer 0, forget state               |
| a pending increase has matured (now >= until)           | offer T                             |
| T <= E (decrease or no change)                          | offer T at once, drop any pending   |
| T > E, binding source is a grid response (dsr) and the  | offer T at once                     |
|   session has charged already; or delay disabled (0)   |                                     |
| T > E, an increase already pending                      | keep its draw and deadline, new T   |
| T > E, nothing pending                                  | draw once from 0..max, hold E       |

A charge start (offer rising from below the minimum current) is labelled ``chargeStart``. The
first charge start of a session always waits, whatever the binding source, because the EV
arriving is not a grid response; a later resume caused by a dsr command applies at once.
The restore when a dsr curtailment lapses is an ordinary increase and waits too (it is what
would otherwise make every charger of a group step up in the same second).

:func:`start_delays` lists the other kind of delay: a profile's drawn ``randomizeStartS``
spread, while its shifted start is still ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from agent.limits.context import ChargeContext
from agent.limits.profiles import Installed
from agent.limits.timeline import origin

Uniform = Callable[[float, float], float]
"""Injected randomness: ``uniform(a, b)`` returns a float in ``[a, b]`` (e.g. Random.uniform)."""

INCREASE = "increase"
CHARGE_START = "chargeStart"
RANDOMIZE_START = "randomizeStart"


@dataclass(frozen=True, slots=True)
class PendingDelay:
    """A drawn delay not yet over: ``what`` is chargeStart, increase or randomizeStart."""

    what: str
    drawn_s: float
    since: float
    until: float
    connector: int | None = None
    target_a: float | None = None
    source: str = ""
    profile_id: str | None = None
    command_id: str | None = None


def draw(uniform: Uniform, max_s: float) -> float:
    """One draw in ``[0, max_s]``, clamped in case the source strays past its bounds."""
    if max_s <= 0:
        return 0.0
    return min(max(float(uniform(0.0, max_s)), 0.0), max_s)


def _le(a: float | None, b: float | None) -> bool:
    """a <= b where None means unconstrained (infinite)."""
    return b is None or (a is not None and a <= b)


@dataclass(slots=True)
class DelayGate:
    """Offered limit of one connector; ``offered`` None means unconstrained."""

    connector: int
    charged: bool = False
    offered: float | None = 0.0
    pending: PendingDelay | None = None

    def step(
        self,
        now: float,
        target: float | None,
        *,
        session: bool,
        dsr: bool,
        paused_below: float,
        max_s: float,
        uniform: Uniform,
        source: str = "",
        profile_id: str | None = None,
        command_id: str | None = None,
    ) -> PendingDelay | None:
        """Advance to ``now``; returns the delay drawn in this step, if one was."""
        if not session:
            self.charged, self.offered, self.pending = False, 0.0, None
            return None
        starting = self.offered is not None and self.offered < paused_below
        if self.pending is not None and now >= self.pending.until:
            self._offer(target, paused_below)
            return None
        if _le(target, self.offered) or (dsr and self.charged) or max_s <= 0:
            self._offer(target, paused_below)
            return None
        if self.pending is not None:
            self.pending = replace(
                self.pending,
                target_a=target,
                source=source,
                profile_id=profile_id,
                command_id=command_id,
            )
            return None
        drawn = draw(uniform, max_s)
        record = PendingDelay(
            what=CHARGE_START if starting else INCREASE,
            drawn_s=drawn,
            since=now,
            until=now + drawn,
            connector=self.connector,
            target_a=target,
            source=source,
            profile_id=profile_id,
            command_id=command_id,
        )
        if drawn == 0.0:
            self._offer(target, paused_below)
        else:
            self.pending = record
        return record

    def _offer(self, target: float | None, paused_below: float) -> None:
        self.offered, self.pending = target, None
        if target is None or target >= paused_below:
            self.charged = True


def start_delays(entries: Sequence[Installed], now: float,
                 ctx: ChargeContext) -> list[PendingDelay]:
    """The randomizeStartS spreads drawn for installed profiles whose start is still ahead."""
    out: list[PendingDelay] = []
    for e in entries:
        start = origin(e, ctx)
        if e.start_delay_s > 0 and start is not None and start > now:
            out.append(
                PendingDelay(
                    what=RANDOMIZE_START,
                    drawn_s=e.start_delay_s,
                    since=e.installed_at,
                    until=start,
                    connector=e.profile.connector,
                    source=e.profile.layer.value,
                    profile_id=e.profile.profile_id,
                    command_id=e.profile.source_command_id,
                )
            )
    return out
