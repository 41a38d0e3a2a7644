"""Run the benchmarks in order (each cleans up what it started) and write the reports.

Sizes: the full run satisfies the issue's sample counts (>= 500 commands, >= 200 reaction
events per topology, 5 minutes of footprint, 100k backlog, >= 50 agents); ``--quick`` runs
every benchmark with small sizes to check the machinery in under two minutes.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hil.bench import (
    p1_latency,
    p1_wallbox,
    p2_reaction,
    p3_footprint,
    p4_drain,
    p5_meter,
    p6_fleet,
    p7_starved,
    p8_session_record,
    w1_web,
)
from hil.bench.common import Progress, machine_info
from hil.bench.notes import attach
from hil.bench.report import render_markdown, to_json
from hil.bench.stats import BenchResult
from hil.scenario_runner import REPO_ROOT

ALL = ("P1", "P1W", "P2", "P3", "P4", "P5", "P6", "W1", "P7", "P8")
FULL: dict[str, dict[str, Any]] = {
    "P1": {"commands": 500, "hops": 500},
    "P1W": {"commands": 300, "hops": 300},
    "P2": {"per_kind": 70},
    "P3": {"window_s": 300.0, "idle_window_s": 60.0},
    "P4": {"rows": 100_000},
    "P5": {"seconds": 20.0},
    "P6": {"agents": [20, 35, 50], "per_worker": 5, "rounds": 3, "poll_ms": 100.0},
    "W1": {"window_s": 60.0},
    "P7": {"window_s": 600.0},
    "P8": {"changes": 10_000, "contrast_changes": 2_000},
}
QUICK: dict[str, dict[str, Any]] = {
    "P1": {"commands": 40, "hops": 40},
    "P1W": {"commands": 30, "hops": 30},
    "P2": {"per_kind": 4},
    "P3": {"window_s": 10.0, "idle_window_s": 5.0},
    "P4": {"rows": 5_000},
    "P5": {"seconds": 5.0},
    "P6": {"agents": [3, 6], "per_worker": 3, "rounds": 2, "poll_ms": 100.0},
    "W1": {"window_s": 5.0},
    "P7": {"window_s": 20.0, "quick": True, "refine": 0, "floor": 5.0},
    "P8": {"changes": 1_000, "contrast_changes": 400},
}
RUNNERS: dict[str, Callable[..., Awaitable[BenchResult]]] = {
    "P1": p1_latency.run, "P1W": p1_wallbox.run, "P2": p2_reaction.run, "P3": p3_footprint.run,
    "P4": p4_drain.run, "P5": p5_meter.run, "P6": p6_fleet.run, "W1": w1_web.run,
    "P7": p7_starved.run, "P8": p8_session_record.run,
}
TITLES = {"P1": "setLimit latency", "P1W": "setLimit latency, retrofitted wallbox",
          "P2": "safety reaction", "P3": "footprint",
          "P4": "journal drain", "P5": "meter throughput", "P6": "fleet",
          "W1": "status page", "P7": "starved CPU", "P8": "session record per change"}


async def run_all(out_dir: Path, *, quick: bool, only: list[str]) -> list[BenchResult]:
    progress = Progress()
    sizes = QUICK if quick else FULL
    results = []
    writer = None
    for key in only:
        progress.done(key, f"{TITLES[key]} ...")
        t0 = time.monotonic()
        kwargs = dict(sizes[key])
        if key == "P3" and "P4" in only:  # P3 leaves a core idle for 5 minutes: write P4's
            writer = await p4_drain.start_prefill(out_dir / "p4", sizes["P4"]["rows"])
        if key == "P4":
            kwargs["writer"] = writer
        try:
            res = await RUNNERS[key](out_dir / key.lower(), progress, **kwargs)
        except Exception as exc:
            res = BenchResult(key, TITLES[key], "did not complete")
            res.error = f"{type(exc).__name__}: {exc}"
            (out_dir / f"{key.lower()}-error.txt").write_text(traceback.format_exc())
        res.duration_s = time.monotonic() - t0
        if key == "P3" and writer is not None:
            res.method += (" During this window P4's backlog writer ran in a separate process "
                           "(one core); the agent's CPU and RSS are its own process's figures.")
        attach(res)
        results.append(res)
        progress.done(key, f"done in {res.duration_s:.0f} s: " + "; ".join(
            f"{f.name} {f.value:.3g} {f.unit}" for f in res.figures
            if f.goal is not None and f.value is not None) + (f" ERROR {res.error}"
                                                               if res.error else ""))
    return results


def bench(out: str | None, *, quick: bool, only: list[str] | None,
          notes: list[str] | None = None) -> tuple[Path, list[BenchResult]]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = (Path(out) if out else REPO_ROOT / "build" / "bench" / stamp).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    selected = [k for k in ALL if only is None or k in only]
    t0 = time.monotonic()
    results = asyncio.run(run_all(out_dir, quick=quick, only=selected))
    meta = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "quick": quick,
            "only": selected, "duration_s": time.monotonic() - t0, "machine": machine_info(),
            "notes": list(notes or [])}
    (out_dir / "results.json").write_text(to_json(results, meta))
    markdown = render_markdown(results, meta)
    (out_dir / "BENCHMARKS.md").write_text(markdown)
    return out_dir, results
