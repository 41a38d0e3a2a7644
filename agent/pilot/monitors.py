"""Small pure watchers the machine composes: link liveness, contactor/lock feedback, anti-flap,
overcurrent. Each takes ``now`` as an argument and exposes its next deadline.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["AntiFlap", "Feedback", "Liveness", "Overcurrent"]


@dataclass(slots=True)
class Liveness:
    """"No good answer for ``limit_s``" watcher (pilot board, relay board, meter grace)."""

    limit_s: float
    last_ok: float = 0.0

    def ok(self, now: float) -> None:
        self.last_ok = now

    def lost(self, now: float) -> bool:
        return now - self.last_ok >= self.limit_s

    @property
    def deadline(self) -> float:
        return self.last_ok + self.limit_s


@dataclass(slots=True)
class Feedback:
    """A commanded binary output (contactor, lock) and its feedback input.

    ``confirmed``: the last feedback sample, taken in a later step than the command, shows the
    commanded position; ``fb`` is the last feedback seen (None: none yet).
    """

    timeout_s: float
    commanded: bool = False
    commanded_at: float = 0.0
    fb: bool | None = None
    fresh: bool = False  # a feedback sample arrived since the last command
    confirmed: bool = False

    def command(self, on: bool, now: float) -> None:
        self.commanded, self.commanded_at = on, now
        self.fresh = self.confirmed = False

    def sample(self, value: bool) -> None:
        self.fb, self.fresh = value, True
        self.confirmed = value == self.commanded

    def overdue(self, now: float) -> bool:
        """The command is older than the timeout and not confirmed."""
        return not self.confirmed and now - self.commanded_at >= self.timeout_s

    @property
    def deadline(self) -> float:
        return self.commanded_at + self.timeout_s


@dataclass(slots=True)
class AntiFlap:
    """Contactor anti-flapping: a minimum off time and a cap on closes per rolling hour.

    The minimum off time protects the contactor within one session (pause/resume by limits,
    faults): it is waived when the EV opened (S2, state D, the plug) and once the connector
    has been seen unplugged, so the previous session never holds back the next vehicle."""

    min_off_s: float
    max_per_hour: int
    opened_at: float | None = None
    waived: bool = True
    closes: deque[float] = field(default_factory=deque)

    def opened(self, now: float, by_vehicle: bool) -> None:
        self.opened_at, self.waived = now, by_vehicle

    def session_ended(self) -> None:
        """The connector was seen unplugged (state 1): the next plug-in is a new session."""
        self.waived = True

    def closed(self, now: float) -> None:
        self.closes.append(now)

    def ready_at(self, now: float) -> float:
        """Earliest time a close is allowed (<= now: allowed now)."""
        while self.closes and now - self.closes[0] >= 3600.0:
            self.closes.popleft()
        at = now
        if self.opened_at is not None and not self.waived:
            at = max(at, self.opened_at + self.min_off_s)
        if len(self.closes) >= self.max_per_hour:
            at = max(at, self.closes[-self.max_per_hour] + 3600.0)
        return at

    def allows(self, now: float) -> bool:
        return self.ready_at(now) <= now


@dataclass(slots=True)
class Overcurrent:
    """Measured current above ``max(ref + abs, ref * (1 + rel))`` continuously for
    ``persist_s`` (GB/T 34657.1 item 10: cut 5..10 s after the onset).

    The onset is timed against the offer now in force. After a cut of the offer the vehicle
    may take ``follow_s`` to follow the new duty, so within that window only a current above
    the *previous* offer's threshold trips on its own; one above the new offer alone trips at
    ``max(onset + persist_s, end of the window open at the onset)``. An overload that starts
    just after a curtailment is therefore still cut ``persist_s`` after its onset, not
    ``follow_s`` later; and cuts inside an open window do not extend it, so a limit that flaps
    faster than ``follow_s`` cannot keep an EV that ignores it from being cut."""

    abs_margin_a: float
    rel_margin: float
    persist_s: float
    follow_s: float
    since: float | None = None  # onset against the offer in force
    since_window_end: float = 0.0  # end of the follow window that was open at that onset
    since_lenient: float | None = None  # onset against the previous offer (follow window)
    offer_a: float = 0.0
    previous_a: float = 0.0
    previous_until: float = 0.0

    def offer(self, amps: float, now: float) -> None:
        if amps < self.offer_a:
            if now < self.previous_until:
                # A further cut inside the follow window: the highest offer of the window
                # stays the reference, but the window is not extended, or a limit that flaps
                # faster than follow_s would let an EV ignore every cut forever.
                self.previous_a = max(self.previous_a, self.offer_a)
            else:
                self.previous_a, self.previous_until = self.offer_a, now + self.follow_s
        self.offer_a = amps

    def _limit(self, ref: float) -> float:
        return max(ref + self.abs_margin_a, ref * (1.0 + self.rel_margin))

    def threshold(self, now: float) -> float:
        """The current that is allowed at ``now`` without ever tripping."""
        ref = self.offer_a
        if now < self.previous_until:
            ref = max(ref, self.previous_a)
        return self._limit(ref)

    def cut(self) -> None:
        """The contactor opened: a current it carried is no longer flowing (no onset kept)."""
        self.since = self.since_lenient = None

    def measure(self, amps: float, now: float) -> None:
        if amps > self._limit(self.offer_a):
            if self.since is None:
                self.since = now
                self.since_window_end = max(now, self.previous_until)
        else:
            self.since = None
        if amps > self.threshold(now):
            if self.since_lenient is None:
                self.since_lenient = now
        else:
            self.since_lenient = None

    def tripped(self, now: float) -> bool:
        deadline = self.deadline
        return deadline is not None and now >= deadline

    @property
    def deadline(self) -> float | None:
        times = []
        if self.since_lenient is not None:
            times.append(self.since_lenient + self.persist_s)
        if self.since is not None:
            times.append(max(self.since + self.persist_s, self.since_window_end))
        return min(times) if times else None
