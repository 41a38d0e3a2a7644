"""The record of a rig run (``Timeline``) and what is made of it: report.md and timeline.png.

Times on the timeline are rig seconds (``time.monotonic()`` minus the rig's start), taken where
things happen: in the rig's tick and actions for the hardware side, and in the pty bridge's tap
for frames (the moment the last byte completes on the virtual wire).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.scenario import RunResult

PLOT_SIGNALS = (
    ("cp_v", "CP (V)"),
    ("offered_a", "offered (A)"),
    ("current_a", "EV draw (A)"),
    ("contactor", "contactor"),
)


@dataclass(frozen=True, slots=True)
class Event:
    t: float
    kind: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 6), "kind": self.kind, **self.data}


class Timeline:
    """Thread-safe event list (the bridge taps run in their own threads)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self.frame_counts: Counter[str] = Counter()

    def rel(self, t_abs: float) -> float:
        return t_abs - self.t0

    def add(self, kind: str, t_abs: float, **data: Any) -> Event:
        event = Event(self.rel(t_abs), kind, data)
        with self._lock:
            self._events.append(event)
        return event

    def count_frame(self, bus: str, direction: str) -> None:
        with self._lock:
            self.frame_counts[f"{bus} {direction}"] += 1

    def events(self, kind: str | None = None, since: float | None = None,
               **match: Any) -> list[Event]:
        with self._lock:
            events = list(self._events)
        out = [
            e for e in events
            if (kind is None or e.kind == kind) and (since is None or e.t >= since)
            and all(e.data.get(k) == v for k, v in match.items())
        ]
        return sorted(out, key=lambda e: e.t)

    def first(self, kind: str, since: float, **match: Any) -> Event | None:
        found = self.events(kind, since, **match)
        return found[0] if found else None

    def series(self, name: str, connector: int = 1) -> list[tuple[float, float]]:
        return [(e.t, float(e.data["value"]))
                for e in self.events("signal", name=name, connector=connector)]

    def to_json(self) -> dict[str, Any]:
        return {
            "time_base": "rig seconds (time.monotonic() - t0)",
            "frame_counts": dict(self.frame_counts),
            "events": [e.to_json() for e in self.events()],
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=0))


# --- report ----------------------------------------------------------------------------------


def render_markdown(result: RunResult, timeline: Timeline | None = None) -> str:
    sc = result.scenario
    checks = result.checks
    failed = [c for c in checks if not c.passed]
    verdict = "PASS" if result.passed else "FAIL"
    lines = [
        f"# {sc.title}",
        "",
        f"- scenario: `{sc.name}`" + (f" ({sc.path})" if sc.path else ""),
        f"- started: {result.started_wall}, duration {result.duration_s:.1f} s",
        f"- result: **{verdict}**: {len(checks) - len(failed)}/{len(checks)} expectations met",
    ]
    if result.agent_log:
        lines.append(f"- agent log: `{result.agent_log}`")
    lines += [f"- {note}" for note in result.notes]
    if result.error:
        first, _, rest = result.error.partition("\n")
        lines += ["", f"**Run error:** {first}"]
        if rest:
            lines += ["", "```", rest.rstrip(), "```"]
    lines += ["", "## Steps", "", "| # | t (s) | step | result |", "|---|---|---|---|"]
    for o in result.outcomes:
        status = "ok" if o.passed else ("ERROR: " + o.error if o.error else "FAIL")
        note = f" — {o.step.note}" if o.step.note else ""
        lines.append(f"| {o.step.index} | {o.t_start:.3f} | `{o.step.describe()}`{note} "
                     f"| {_cell(status)} |")
    lines += ["", "## Expectations", "",
              "| step | expectation | measured | limit | verdict |", "|---|---|---|---|---|"]
    for o in result.outcomes:
        for c in o.checks:
            detail = f" ({c.detail})" if c.detail else ""
            lines.append(f"| {o.step.index} | {c.name} | {_cell(c.measured)}{_cell(detail)} "
                         f"| {_cell(c.limit)} | {'PASS' if c.passed else '**FAIL**'} |")
    if result.aggregator_events:
        lines += ["", "## What the charger told the aggregator (evt)", "",
                  "| seq | type | connector | body |", "|---|---|---|---|"]
        for e in result.aggregator_events:
            body = json.dumps(e.get("body", {}), separators=(",", ":"))
            lines.append(f"| {e.get('seq')} | {e.get('type')} | {e.get('connector', '')} "
                         f"| {_cell(body[:160])} |")
    lines += ["", "## Summary", ""]
    if failed:
        lines.append(f"{len(failed)} expectation(s) failed:")
        lines += [f"- {c.name}: measured {c.measured}, limit {c.limit}" for c in failed]
    else:
        lines.append("All expectations met." if checks else "No expectations in this scenario.")
    if timeline is not None and timeline.frame_counts:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(timeline.frame_counts.items()))
        lines += ["", f"Read frames on the wire: {counts}."]
    return "\n".join(lines) + "\n"


def summary_line(result: RunResult) -> str:
    checks = result.checks
    ok = sum(c.passed for c in checks)
    verdict = "PASS" if result.passed else "FAIL"
    extra = f" ({result.error})" if result.error else ""
    return f"{result.scenario.name}: {verdict} {ok}/{len(checks)} expectations{extra}"


def log_excerpt(path: str | Path | None, limit: int = 40) -> str:
    """What an installer reads first in an agent's JSON log: its warnings, errors and cleared
    faults, one short line each (the last ``limit``), for a failing test's message: CI keeps
    the message, not the log file."""
    if path is None or not Path(path).is_file():
        return "(no agent log)"
    picked: list[str] = []
    for raw in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        if entry.get("level") in ("warning", "error") or entry.get("event") == "fault_cleared":
            stamp = str(entry.pop("timestamp", ""))[11:23]
            event, level = entry.pop("event", "?"), entry.pop("level", "")
            rest = " ".join(f"{k}={v}" for k, v in entry.items())
            picked.append(f"{stamp} {level} {event} {rest}".rstrip())
    return "\n".join(picked[-limit:]) or "(no warnings, errors or cleared faults)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- plot ------------------------------------------------------------------------------------


def plot_timeline(timeline: Timeline, path: Path, *, title: str = "",
                  connector: int = 1) -> None:
    """Stacked step plots sharing the time axis; vertical lines mark the rig's actions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max((e.t for e in timeline.events()), default=1.0)
    fig, axes = plt.subplots(len(PLOT_SIGNALS), 1, sharex=True, figsize=(11, 7))
    marks = timeline.events("ev") + timeline.events("inject") + timeline.events("agent")
    for ax, (name, label) in zip(axes, PLOT_SIGNALS, strict=True):
        points = timeline.series(name, connector)
        if points:
            xs = [t for t, _ in points] + [end]
            ys = [v for _, v in points] + [points[-1][1]]
            ax.step(xs, ys, where="post", linewidth=1.2)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        for m in marks:
            ax.axvline(m.t, color="grey", linestyle=":", linewidth=0.8)
    axes[-1].set_yticks([0, 1], ["open", "closed"])
    for m in marks:
        what = m.data.get("action") or m.data.get("fault") or m.data.get("cmd") or m.kind
        axes[0].annotate(str(what), (m.t, 1.0), xycoords=("data", "axes fraction"),
                         rotation=60, fontsize=7, va="bottom")
    axes[-1].set_xlabel("rig time (s)")
    if title:
        fig.suptitle(title, y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
