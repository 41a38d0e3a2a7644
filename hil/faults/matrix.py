"""Run the fault matrix: each case on a fresh bench; the table as Markdown and JSON.

    results = asyncio.run(run_matrix(Path("build/faults"), only=None, sigkill_iterations=20))

A case that raises is a FAIL with the exception as its error (the bench is still torn down).
The safe-state requirement is checked here too: a case marked ``safe`` must have measured a
time to the safe state (or proved it never left it).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.faults import durability, power
from hil.faults.case_report import CaseReport
from hil.faults.cases import CASES, FaultCase
from hil.faults.testbed import Testbed

QUICK_SIGKILL = 8
FULL_SIGKILL = 20


@dataclass
class CaseResult:
    case: FaultCase
    outcome: CaseReport

    @property
    def passed(self) -> bool:
        return self.outcome.passed

    def to_json(self) -> dict[str, Any]:
        return {"name": self.case.name, "fault": self.case.fault,
                "safe_required": self.case.safe, "recovery_required": self.case.recovers,
                **self.outcome.to_json()}


async def run_case(case: FaultCase, out_dir: Path, *, sigkill_iterations: int = FULL_SIGKILL,
                   power_cuts: int | None = None) -> CaseResult:
    directory = out_dir / case.name  # Testbed resolves it (mosquitto runs in its own cwd)
    shutil.rmtree(directory, ignore_errors=True)
    o = CaseReport()
    fn = case.run
    if fn is durability.sigkill:
        fn = functools.partial(durability.sigkill, iterations=sigkill_iterations)
    if fn is power.power_cut:
        fn = functools.partial(power.power_cut, cuts=power_cuts or sigkill_iterations)
    t0 = time.monotonic()
    try:
        async with Testbed(directory, mqtt=case.mqtt, **case.bench) as bench:
            await fn(bench, o)
    except Exception as exc:  # a broken case is a failed row, the matrix goes on
        o.error = f"{type(exc).__name__}: {exc}"
    o.duration_s = time.monotonic() - t0
    if case.safe and o.error is None:
        o.check(o.t_safe_s is not None, "safe state required and reached")
    if case.recovers and o.error is None:
        o.check(o.recovered is True, "recovers by itself once the cause is gone")
    if o.data_lost:
        o.check(False, f"{o.data_lost} recorded messages lost")
    (directory / "result.json").write_text(json.dumps(o.to_json(), indent=1))
    return CaseResult(case, o)


async def run_matrix(out_dir: Path, *, only: list[str] | None = None,
                     sigkill_iterations: int = FULL_SIGKILL) -> list[CaseResult]:
    results = []
    for case in CASES:
        if only and case.name not in only:
            continue
        results.append(await run_case(case, out_dir, sigkill_iterations=sigkill_iterations))
    return results


# --- the table ------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def row(r: CaseResult) -> list[str]:
    o, c = r.outcome, r.case
    if o.t_safe_s is not None:
        safe = f"{o.t_safe_s * 1000:.0f} ms" + (f" ({o.safe_detail})" if o.safe_detail else "")
    else:
        safe = "not required (kept charging)" if not c.safe else "NOT REACHED"
    recovered = {True: "yes", False: "NO", None: "n/a"}[o.recovered]
    if o.recovery:
        recovered += f" ({o.recovery})"
    if o.data_lost is None:
        data = "n/a (no MQTT)" if not c.mqtt else "not judged"
    else:
        data = f"{o.data_lost}" + (f" ({o.data_detail})" if o.data_detail else "")
    did = "; ".join(o.did) or "-"
    if o.error:
        did = f"ERROR {o.error}"
    verdict = "PASS" if r.passed else "FAIL: " + "; ".join(o.failures)[:300]
    return [c.fault, did, safe, recovered, data, verdict]


HEADER = ["fault", "what the agent did", "time to safe state", "recovered", "data lost",
          "result"]


def render_markdown(results: list[CaseResult], duration_s: float) -> str:
    lines = ["# Fault matrix", "",
             f"{sum(r.passed for r in results)}/{len(results)} rows pass; run time "
             f"{duration_s:.0f} s. Time to safe state: inject -> contactor-open frame complete "
             "on the wire and PWM off (duty 1000 accepted by the pilot board), from the rig's "
             "timeline.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cell(x) for x in row(r)) + " |" for r in results]
    notes = [(r.case.name, n) for r in results for n in r.outcome.notes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- **{name}**: {n}" for name, n in notes]
    return "\n".join(lines) + "\n"


def render_text(results: list[CaseResult]) -> str:
    out = []
    for r in results:
        fault, did, safe, recovered, data, verdict = row(r)
        out.append(f"{'PASS' if r.passed else 'FAIL'}  {fault}\n      did: {did}\n"
                   f"      safe: {safe}\n      recovered: {recovered}\n      data lost: {data}"
                   + ("" if r.passed else f"\n      {verdict}"))
    return "\n".join(out)


def write_outputs(results: list[CaseResult], out_dir: Path, duration_s: float) -> None:
    (out_dir / "faults.md").write_text(render_markdown(results, duration_s))
    (out_dir / "faults.json").write_text(json.dumps(
        {"duration_s": round(duration_s, 1), "passed": all(r.passed for r in results),
         "rows": [r.to_json() for r in results]}, indent=1))


def main(out: str | None, only: list[str] | None, quick: bool) -> int:
    out_dir = Path(out or "build/faults")
    out_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # the rig's damaged frames
    t0 = time.monotonic()
    iterations = QUICK_SIGKILL if quick else FULL_SIGKILL
    results = asyncio.run(run_matrix(out_dir, only=only, sigkill_iterations=iterations))
    duration = time.monotonic() - t0
    write_outputs(results, out_dir, duration)
    print(render_text(results))
    print(f"{sum(r.passed for r in results)}/{len(results)} rows pass in {duration:.0f} s; "
          f"table: {out_dir / 'faults.md'}")
    return 0 if results and all(r.passed for r in results) else 1
