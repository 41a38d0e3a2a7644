"""The session record stays bounded: old curtailments and random delays merge into exact totals.

Why: an aggregator that adjusts a limit every few seconds for a day (frequency response, PV
following) adds thousands of curtailments to one session. The ledger re-encodes the record at
every change, so an unbounded list makes each change costlier than the last and ``sessionEnded``
grow without end. The record keeps the latest ``MAX_ENTRIES`` of each list; older *ended*
entries fold into a summary whose count and total duration are exact (integer milliseconds),
so the 10,000th change costs what the first did and nothing is lost from the totals.
Entries still in force are never merged: they must stay addressable to receive their end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from agent.store import rfc3339

MAX_ENTRIES = 32


class _Span(Protocol):
    @property
    def from_at(self) -> float: ...
    @property
    def to_at(self) -> float | None: ...
    @property
    def limit(self) -> Mapping[str, Any]: ...


C = TypeVar("C", bound=_Span)
D = TypeVar("D")


def duration_ms(from_at: float, to_at: float) -> int:
    return max(0, round((to_at - from_at) * 1000))


@dataclass(frozen=True, slots=True)
class MergedCurtailments:
    """What the merged (ended) curtailments add up to."""

    count: int
    first_from: float
    last_to: float
    total_ms: int  # sum of each merged entry's own duration (overlaps count twice)
    min_limit_a: float | None  # lowest A limit among them (None: none in A)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "firstFrom": rfc3339(self.first_from),
                               "lastTo": rfc3339(self.last_to), "totalS": self.total_ms / 1000}
        if self.min_limit_a is not None:
            out["minLimitA"] = self.min_limit_a
        return out

    def to_json(self) -> list[Any]:
        return [self.count, self.first_from, self.last_to, self.total_ms, self.min_limit_a]

    @staticmethod
    def from_json(data: Sequence[Any] | None) -> MergedCurtailments | None:
        return None if not data else MergedCurtailments(*data)

    def add(self, c: _Span) -> MergedCurtailments:
        return _merge_one(self, c)


@dataclass(frozen=True, slots=True)
class MergedDelays:
    """What the merged random delays add up to (seconds are whole: exact)."""

    count: int
    total_s: int

    def record(self) -> dict[str, Any]:
        return {"count": self.count, "totalS": self.total_s}

    def to_json(self) -> list[int]:
        return [self.count, self.total_s]

    @staticmethod
    def from_json(data: Sequence[Any] | None) -> MergedDelays | None:
        return None if not data else MergedDelays(int(data[0]), int(data[1]))


def _amps(limit: Mapping[str, Any]) -> float | None:
    return float(limit["value"]) if limit.get("unit") == "A" else None


def _merge_one(m: MergedCurtailments | None, c: _Span) -> MergedCurtailments:
    assert c.to_at is not None
    amps = _amps(c.limit)
    if m is None:
        return MergedCurtailments(1, c.from_at, c.to_at, duration_ms(c.from_at, c.to_at), amps)
    lows = [x for x in (m.min_limit_a, amps) if x is not None]
    return MergedCurtailments(m.count + 1, min(m.first_from, c.from_at), max(m.last_to, c.to_at),
                              m.total_ms + duration_ms(c.from_at, c.to_at),
                              min(lows) if lows else None)


def bound_curtailments(
    entries: tuple[C, ...], merged: MergedCurtailments | None, keep: int = MAX_ENTRIES
) -> tuple[tuple[C, ...], MergedCurtailments | None]:
    """Fold the earliest-ended entries into ``merged`` until at most ``keep`` remain (entries
    still in force stay, even beyond ``keep``). Order of the kept entries is unchanged."""
    excess = len(entries) - keep
    if excess <= 0:
        return entries, merged
    ended = sorted((i for i, c in enumerate(entries) if c.to_at is not None),
                   key=lambda i: (entries[i].to_at or 0.0, i))[:excess]
    for i in ended:
        merged = _merge_one(merged, entries[i])
    drop = set(ended)
    return tuple(c for i, c in enumerate(entries) if i not in drop), merged


def bound_delays(
    entries: tuple[D, ...], merged: MergedDelays | None, seconds: Any,
    keep: int = MAX_ENTRIES,
) -> tuple[tuple[D, ...], MergedDelays | None]:
    """Keep the latest ``keep`` random delays; the earlier ones fold into ``merged``."""
    excess = len(entries) - keep
    if excess <= 0:
        return entries, merged
    folded = entries[:excess]
    count = (merged.count if merged else 0) + len(folded)
    total = (merged.total_s if merged else 0) + sum(round(seconds(d)) for d in folded)
    return entries[excess:], MergedDelays(count, total)
