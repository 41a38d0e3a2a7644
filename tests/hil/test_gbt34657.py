"""The 12 GB/T 34657.1-2017 AC supply-equipment test items (and the demo session) as HIL tests.

Each item is a scenario in ``hil/scenarios`` run against the whole agent process on the rig:
virtual serial ports with line timing, simulated pilot board, relay board, meter and EV. Every
reaction time is taken from the rig's own timestamps (the change it made to the CP/CC/PE/status
-> the contactor-open frame complete on the virtual wire) and compared with the standard's
limit (100 ms, 3 s, 5..10 s); these are compliance limits of the standard, not benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.runner import run_scenario
from hil.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "hil" / "scenarios"
ITEMS = sorted(SCENARIOS.glob("gbt34657_*.yaml"))

pytestmark = pytest.mark.hil


def test_all_twelve_items_are_present() -> None:
    numbers = sorted(int(p.name.split("_")[1]) for p in ITEMS)
    assert numbers == list(range(1, 13))


@pytest.mark.parametrize("path", [*ITEMS, SCENARIOS / "demo.yaml"], ids=lambda p: p.stem)
async def test_scenario_against_the_agent(path: Path, tmp_path: Path) -> None:
    result = await run_scenario(load_scenario(path), tmp_path / path.stem)
    failed = [f"{c.name}: measured {c.measured}, limit {c.limit} {c.detail}".strip()
              for c in result.checks if not c.passed]
    assert result.error is None, result.error
    assert result.checks, "a scenario without expectations proves nothing"
    assert not failed, "\n".join(failed) + f"\nagent log: {result.agent_log}"
