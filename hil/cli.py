"""``evse-hil``: the hardware-in-the-loop rig from the command line.

    evse-hil rig -c CONFIG [--run-dir DIR]          serve the config's devices until Ctrl-C
    evse-hil run SCENARIO [--out DIR] [--config C]  rig + agent + scenario -> report.md,
                                                    timeline.png, timeline.json; exit 1 on FAIL
    evse-hil list                                   the scenarios shipped in hil/scenarios
    evse-hil faults [--only NAME] [--quick] [--out DIR]   the fault matrix -> faults.md/.json
    evse-hil bench [--quick] [--only P1,P2] [--out DIR]
                                                    performance figures -> results.json and
                                                    BENCHMARKS.md (the repo's, on a full run)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

from agent.config import load_config
from agent.errors import ConfigError
from hil.report import summary_line
from hil.rig import Rig
from hil.scenario import ScenarioError, load_scenario
from hil.scenario_runner import run_scenario

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evse-hil", description="EVSE hardware-in-the-loop rig")
    sub = p.add_subparsers(dest="command", required=True)
    rig = sub.add_parser("rig", help="serve the devices of a config on virtual serial ports")
    rig.add_argument("-c", "--config", required=True)
    rig.add_argument("--run-dir", default=None, help="where links and the patched config go")
    run = sub.add_parser("run", help="run a scenario against the agent")
    run.add_argument("scenario", help="a YAML file, or the name of a shipped scenario")
    run.add_argument("--out", default=None, help="output directory (default build/hil/NAME)")
    run.add_argument("--config", default=None, help="agent config (default: the scenario's)")
    sub.add_parser("list", help="list the shipped scenarios")
    faults = sub.add_parser("faults", help="run the fault matrix (exit 1 if a row fails)")
    faults.add_argument("--only", action="append", default=None, metavar="NAME",
                        help="run only this case (repeatable)")
    faults.add_argument("--quick", action="store_true", help="fewer SIGKILL iterations")
    faults.add_argument("--out", default=None, help="output directory (default build/faults)")
    bench = sub.add_parser("bench", help="measure the agent against its performance goals")
    bench.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes")
    bench.add_argument("--only", default=None, help="comma-separated subset, e.g. P1,P2")
    bench.add_argument("--out", default=None, help="output directory (default build/bench/TS)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "rig":
            return _rig(args.config, args.run_dir)
        if args.command == "run":
            return _run(args.scenario, args.out, args.config)
        if args.command == "faults":
            from hil.faults.matrix import main as faults_main

            return faults_main(args.out, args.only, args.quick)
        if args.command == "bench":
            from hil.bench.cli import bench_command
            return bench_command(args.quick, args.only, args.out)
        for path in sorted(SCENARIO_DIR.glob("*.yaml")):
            print(f"{path.stem:32} {load_scenario(path).title}")
        return 0
    except (ConfigError, ScenarioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _rig(config_path: str, run_dir: str | None) -> int:
    config = load_config(config_path)
    directory = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="evse-hil-"))

    async def serve() -> None:
        async with Rig(config, directory) as rig:
            for name in config.buses:
                print(f"bus {name}: {rig.link(name)} (rig process {rig.pid})")
            print(f"patched config: {rig.patched_config_path}")
            print(f"run the agent:  evse-agent run -c {rig.patched_config_path}")
            print("Ctrl-C to stop", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def _run(scenario_arg: str, out: str | None, config: str | None) -> int:
    path = Path(scenario_arg)
    if not path.exists() and (SCENARIO_DIR / f"{scenario_arg}.yaml").exists():
        path = SCENARIO_DIR / f"{scenario_arg}.yaml"
    scenario = load_scenario(path)
    out_dir = Path(out) if out else Path("build") / "hil" / scenario.name
    result = asyncio.run(run_scenario(scenario, out_dir, config_path=config))
    for check in result.checks:
        verdict = "PASS" if check.passed else "FAIL"
        print(f"  {verdict}  {check.name}: {check.measured} (limit {check.limit})")
    print(summary_line(result))
    print(f"report: {out_dir / 'report.md'}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
