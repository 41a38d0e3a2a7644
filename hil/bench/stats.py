"""Statistics and goals of the bench (pure: no clocks, no I/O).

Percentiles use the nearest-rank method: the p-th percentile of n sorted values is the value at
rank ceil(p/100 * n) (1-based). It is always one of the measured values, never an interpolation,
so "p99 = 23.1 ms" means at least 99 % of the samples were at or below 23.1 ms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; ``p`` in (0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < p <= 100:
        raise ValueError(f"p must be in (0, 100], not {p}")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    median: float
    p99: float
    max: float
    min: float
    mean: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(values: Sequence[float]) -> Summary:
    """n, median (nearest-rank p50), p99, max, min and mean of the samples."""
    if not values:
        raise ValueError("no samples")
    return Summary(len(values), percentile(values, 50), percentile(values, 99), max(values),
                   min(values), sum(values) / len(values))


@dataclass(frozen=True, slots=True)
class Goal:
    """``op value unit``, e.g. ``<= 25 ms``."""

    op: Literal["<=", ">="]
    value: float
    unit: str

    def met(self, measured: float) -> bool:
        return measured <= self.value if self.op == "<=" else measured >= self.value

    def text(self) -> str:
        return f"{self.op} {fmt(self.value)} {self.unit}".strip()


@dataclass
class Figure:
    """One measured number, with its goal when the issue sets one."""

    bench: str
    name: str
    value: float | None
    unit: str
    goal: Goal | None = None
    n: int | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        if self.value is None:
            return False
        return self.goal.met(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {"bench": self.bench, "name": self.name, "value": self.value, "unit": self.unit,
                "goal": None if self.goal is None else self.goal.text(), "met": self.met,
                "n": self.n, "note": self.note}


@dataclass
class BenchResult:
    """The outcome of one benchmark: figures, how they were measured, what limited them."""

    bench: str
    title: str
    method: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None

    def add(self, name: str, value: float | None, unit: str, goal: Goal | None = None,
            n: int | None = None, note: str = "") -> Figure:
        fig = Figure(self.bench, name, value, unit, goal, n, note)
        self.figures.append(fig)
        return fig

    def add_summary(self, name: str, s: Summary | None, unit: str, goal: Goal | None = None,
                    *, goal_on: str = "p99", note: str = "") -> None:
        """median, p99 and max as three figures; ``goal`` is judged on ``goal_on``."""
        for key in ("median", "p99", "max"):
            value = None if s is None else float(getattr(s, key))
            self.add(f"{name} {key}", value, unit, goal if key == goal_on else None,
                     None if s is None else s.n, note if key == goal_on else "")

    def to_dict(self) -> dict[str, Any]:
        return {"bench": self.bench, "title": self.title, "method": self.method,
                "figures": [f.to_dict() for f in self.figures], "notes": self.notes,
                "duration_s": round(self.duration_s, 1), "error": self.error, "raw": self.raw}


def fmt(value: float | None) -> str:
    """Three significant figures for the table, without scientific notation."""
    if value is None:
        return "—"
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"
