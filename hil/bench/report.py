"""The bench's outputs: ``results.json`` and a markdown table (``BENCHMARKS.md``).

Pure formatting: everything measured comes in as ``BenchResult``s, the machine and run facts as
a dict, so the layout can be tested without running anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hil.bench.stats import BenchResult, Figure, fmt

PERCENTILE_NOTE = (
    "Percentiles are nearest-rank (the p-th percentile of n sorted samples is the sample at rank "
    "ceil(p/100 x n)); medians are p50 by the same rule. Latencies use one machine clock "
    "(time.monotonic) for both ends.")


def verdict(fig: Figure) -> str:
    met = fig.met
    return "" if met is None else ("met" if met else "**missed**")


def figure_row(fig: Figure) -> str:
    unit = f" {fig.unit}" if fig.unit else ""
    value = fmt(fig.value) + unit if fig.value is not None else "—"
    goal = fig.goal.text() if fig.goal is not None else ""
    n = "" if fig.n is None else str(fig.n)
    cells = [fig.bench, fig.name, value, goal, verdict(fig), n, fig.note]
    return "| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |"


def render_markdown(results: Sequence[BenchResult], meta: dict[str, Any]) -> str:
    machine = meta.get("machine", {})
    lines = [
        "# Benchmarks",
        "",
        f"Latest `evse-hil bench{' --quick' if meta.get('quick') else ''}` run: "
        f"{meta.get('started', '?')}, {meta.get('duration_s', 0):.0f} s wall time.",
        "",
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cpus', '?')} CPUs, "
        f"{machine.get('mem_gb', '?')} GB RAM, Linux {machine.get('kernel', '?')}, "
        f"Python {machine.get('python', '?')}; mosquitto on 127.0.0.1; the HIL rig's pty "
        "bridges emulate line timing at the configured baud rates; every agent is a separate "
        "process started as `python -m agent.cli run`.",
        "",
        PERCENTILE_NOTE,
        "",
        "| Bench | Figure | Measured | Goal | | n | Note |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [figure_row(f) for r in results for f in r.figures]
    for r in results:
        if r.error:
            lines.append(f"| {r.bench} | did not complete | — | | **missed** | | "
                         f"{r.error.replace('|', '/')} |")
    lines += ["", "## Method", ""]
    for r in results:
        lines.append(f"**{r.bench} — {r.title}** ({r.duration_s:.0f} s). {r.method}")
        lines.append("")
    notes = [(r.bench, n) for r in results for n in r.notes] + [
        ("", n) for n in meta.get("notes", [])]
    if notes:
        lines += ["## Notes: what limits the figures", ""]
        lines += [f"- {bench + ': ' if bench else ''}{text}" for bench, text in notes]
        lines.append("")
    missed = [f for r in results for f in r.figures if f.met is False]
    failed = [r.bench for r in results if r.error]
    lines.append(f"{len(missed)} figure(s) missed their goal." if missed
                 else "Every figure with a goal met it.")
    if failed:
        lines.append(f"Did not complete: {', '.join(failed)}.")
    return "\n".join(lines) + "\n"


def to_json(results: Sequence[BenchResult], meta: dict[str, Any]) -> str:
    return json.dumps({"meta": meta, "results": [r.to_dict() for r in results]}, indent=1,
                      default=str)
