"""``evse-hil bench``: run, print the table; the repo's BENCHMARKS.md is the latest full run."""

from __future__ import annotations

import shutil
import sys

from hil.bench.run import ALL, bench
from hil.scenario_runner import REPO_ROOT


def bench_command(quick: bool, only: str | None, out: str | None) -> int:
    selected = None if not only else [k.strip().upper() for k in only.split(",") if k.strip()]
    unknown = sorted(set(selected or []) - set(ALL))
    if unknown:
        print(f"error: unknown benchmark(s) {', '.join(unknown)}; choose from "
              f"{', '.join(ALL)}", file=sys.stderr)
        return 2
    out_dir, results = bench(out, quick=quick, only=selected)
    markdown = out_dir / "BENCHMARKS.md"
    print(markdown.read_text())
    print(f"results: {out_dir / 'results.json'}")
    if not quick and selected is None:
        shutil.copyfile(markdown, REPO_ROOT / "BENCHMARKS.md")
        print(f"updated {REPO_ROOT / 'BENCHMARKS.md'}")
    return 1 if any(r.error for r in results) else 0
