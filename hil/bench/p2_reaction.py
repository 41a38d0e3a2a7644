"""P2: CP leaving 3' (S2 opens, unplug, CP short) -> contactor-open frame complete on the wire.

Each event is an EV action or fault on the rig, stamped with the rig's clock when the hardware
changes; the answer is the rig's stamp of the FC05 contactor-open frame's last byte. Events are
fired after a random 20-70 ms of charging, so their phase against the 10 ms pilot poll is
uniform. Beside the figures: the worst-case bound ``check-config`` states for the topology.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path

from agent.busplan import analyse
from agent.config import AgentConfig
from hil.bench.common import (
    Progress,
    bench_config,
    fast_ev,
    single_bus_data,
    start_charging,
    station,
    wait_frame,
)
from hil.bench.p2_floor import reaction_floor
from hil.bench.stats import BenchResult, Goal, Summary, summarize
from hil.poll import poll_until
from hil.rig import Rig

KINDS = ("s2_open", "unplug", "cp_short")
LABEL = {"s2_open": "S2 opens", "unplug": "unplug", "cp_short": "CP short"}
GOAL_MS = 20.0  # issue 12 P2 (p99, default topology); the floor rows say what is reachable


@dataclass
class Run:
    samples: dict[str, list[float]]
    missed: int
    ready_s: float
    faults: dict[str, int]
    failures: list[str]


async def one_event(rig: Rig, kind: str) -> float | None:
    """Fire one event while charging, return its reaction (s), then charge again."""
    await asyncio.sleep(random.uniform(0.02, 0.07))
    if kind == "s2_open":
        t0 = rig.ev_action("open_s2")
    elif kind == "unplug":
        t0 = rig.ev_action("unplug")
    else:
        t0 = rig.inject("cp_short")
    frame = await wait_frame(rig, t0, "contactor_open", 3.0)
    # contacts follow the frame later
    await poll_until(lambda: not rig.contactor_closed(), 2.0, 0.005)
    if kind == "cp_short":
        await asyncio.sleep(0.05)
        rig.inject("cp_short", False)
        rig.ev_action("unplug")  # CP_SHORT clears in state 1
    if kind != "s2_open":
        await asyncio.sleep(0.15)
    for _ in range(3):  # a fault the agent raised on its own can leave it waiting for unplug
        if await start_charging(rig, 10.0):
            return None if frame is None else frame.t - t0
        rig.ev_action("unplug")
        await asyncio.sleep(0.5)
    raise RuntimeError(f"no charging again after {kind} (3 tries with unplug/plug-in)")


async def measure(config: AgentConfig, run_dir: Path, progress: Progress, tag: str,
                  per_kind: int) -> Run:
    samples: dict[str, list[float]] = {k: [] for k in KINDS}
    missed = 0
    failures: list[str] = []
    async with station(config, run_dir, fast_ev()) as st:
        if not await start_charging(st.rig):
            raise RuntimeError("the vehicle did not start charging")
        order = [k for _ in range(per_kind) for k in KINDS]
        for i, kind in enumerate(order):
            try:
                got = await one_event(st.rig, kind)
            except RuntimeError as exc:
                failures.append(f"stopped after {i} events: {exc}")
                break
            if got is None:
                missed += 1
            else:
                samples[kind].append(got * 1000)
            progress.update("P2", f"{tag}: event {i + 1}/{len(order)}")
        ready = st.ready_s
        faults: dict[str, int] = {}
        for e in st.agent.log_events():
            if e.get("event") == "fault_raised":
                code = str(e.get("code"))
                faults[code] = faults.get(code, 0) + 1
    return Run(samples, missed, ready, faults, failures)


async def run(out_dir: Path, progress: Progress, *, per_kind: int) -> BenchResult:
    res = BenchResult("P2", "CP leaves 3' -> contactor-open frame on the wire", (
        f"Whole agent on the rig; {per_kind} events of each kind (S2 opens, unplug, CP short to "
        "PE) in turn, each after 20-70 ms of charging (uniform phase against the pilot poll); "
        "reaction = rig time the FC05 contactor-open frame's last byte completes on the virtual "
        "wire minus the rig time of the EV action. Anti-flapping lifted (contactor_min_off_s 0) "
        "so the contactor may cycle; everything else as in the example config. Floor = what "
        "the poll period, the debounce and the line alone impose (hil/bench/p2_floor.py): per "
        "event (n-1) x T + U(0, T) + the board's answer frame + t3.5 + the contactor-open frame, "
        "with T = pilot_board.poll_ms, n = the core's debounce count for the level left to "
        "(safety.debounce_samples; 1 for a CP short), line times from the drivers' wire plan; "
        "its median and p99 are of that distribution, the kinds weighted as measured; "
        "measured minus floor is what the agent, the bus and the machine add."))
    topologies = [("default", "default topology (control 115200, meter 9600)", None),
                  ("single19200", "single bus 19200 (boards + meter)", single_bus_data(19200))]
    ready: list[float] = []
    for key, label, data in topologies:
        cfg = bench_config(base=data, cycling=True)
        bound = analyse(cfg).connectors[0]
        run_ = await measure(cfg, out_dir / key, progress, key, per_kind)
        samples, missed, faults = run_.samples, run_.missed, run_.faults
        ready.append(run_.ready_s)
        res.notes.extend(f"{label}: {text}" for text in run_.failures)
        unasked = {k: v for k, v in faults.items() if k != "CP_SHORT"}
        if unasked:
            res.notes.append(f"{label}: faults the agent raised on its own during the run: "
                             + ", ".join(f"{k} x{v}" for k, v in sorted(unasked.items()))
                             + " (each opens the contactor; an event that finds it already "
                             "open has no open frame and counts as missed)")
        combined = [v for k in KINDS for v in samples[k]]
        goal = Goal("<=", GOAL_MS, "ms") if key == "default" else None
        for kind in ("s2_open", "unplug"):
            s = summarize(samples[kind]) if samples[kind] else None
            res.add_summary(f"{label}: {LABEL[kind]}", s, "ms", goal)
        s = summarize(samples["cp_short"]) if samples["cp_short"] else None
        res.add_summary(f"{label}: CP short", s, "ms")
        sc = summarize(combined) if combined else None
        res.add_summary(f"{label}: all three", sc, "ms", goal,
                        note=f"{missed} events without an open frame within 3 s" if missed else "")
        if sc is not None:
            _floor_rows(res, label, cfg, samples, sc)
        res.add(f"{label}: max vs check-config bound", None if sc is None else sc.max, "ms",
                Goal("<=", bound.bound_ms, "ms"), None if sc is None else sc.n,
                note=("check-config: OK" if bound.ok else "check-config REFUSES this topology: "
                      + "; ".join(bound.reasons)))
        res.raw[key] = {"samples_ms": samples, "missed": missed, "faults": faults,
                        "bound_ms": bound.bound_ms,
                        "bound_terms_ms": bound.terms_ms, "check_config_ok": bound.ok,
                        "reasons": bound.reasons, "floor": _floor_raw(cfg)}
    res.raw["ready_s"] = ready
    return res


def _floor_raw(cfg: AgentConfig) -> dict[str, object]:
    floor = reaction_floor(cfg)
    return {"period_ms": floor.period_s * 1000, "samples": floor.samples,
            "terms_ms": {k: v * 1000 for k, v in floor.terms_s.items()}}


def _floor_rows(res: BenchResult, label: str, cfg: AgentConfig, samples: dict[str, list[float]],
                measured: Summary) -> None:
    """The floor's median and p99 beside the measured ones, and what the rest adds."""
    floor = reaction_floor(cfg)
    weights = {k: float(len(v)) for k, v in samples.items() if v}
    median, p99 = (floor.quantile(p, weights) * 1000 for p in (50, 99))
    res.add(f"{label}: floor (poll + debounce + line), all three median", median, "ms",
            note=floor.explain(weights, LABEL))
    res.add(f"{label}: floor (poll + debounce + line), all three p99", p99, "ms")
    res.add(f"{label}: all three minus floor, median", measured.median - median, "ms",
            n=measured.n)
    res.add(f"{label}: all three minus floor, p99", measured.p99 - p99, "ms", n=measured.n)
