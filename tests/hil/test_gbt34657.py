"""The 12 GB/T 34657.1-2017 AC supply-equipment test items (and the demo session) as HIL tests.

Each item is a scenario in ``hil/scenarios`` run against the whole agent process on the rig:
virtual serial ports with line timing, simulated pilot board, relay board, meter and EV. Every
reaction time is taken from the rig's own timestamps (the change it made to the CP/CC/PE/status
-> the contactor-open frame complete on the virtual wire) and compared with the standard's
limit (100 ms, 3 s, 5..10 s); these are compliance limits of the standard, not benchmarks.

Test labs run the twelve items back to back on one charger, and so does ``make test``: one after
another on ONE agent with the example config, a few seconds apart (issue 9). The first item meets
a freshly started agent, every later one an agent that has run the items before it - the harder
case. One item alone on a fresh agent: ``evse-hil run hil/scenarios/gbt34657_NN_*.yaml`` (the
same checks); running all twelve alone as well cost ~50 s of the suite's 10 min for no path the
back-to-back run and the other HIL tests do not already take.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hil.ev import EvParams
from hil.scenario import load_scenario, parse_scenario
from hil.scenario_runner import run_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "hil" / "scenarios"
ITEMS = sorted(SCENARIOS.glob("gbt34657_*.yaml"))

BETWEEN_ITEMS_S = 3.0
# The rig's vehicle keeps what a plug_in set (item 2 ends with a vehicle without S2, item 12
# with out-of-limit resistors); a lab starts each item with its own vehicle, so the first
# plug-in of every item names the default one.
VEHICLE = {key: getattr(EvParams(), key) for key in ("has_s2", "r2_ohm", "r3_ohm", "obc_max_a",
                                                      "follow_delay_s")}

pytestmark = pytest.mark.hil


def test_all_twelve_items_are_present() -> None:
    numbers = sorted(int(p.name.split("_")[1]) for p in ITEMS)
    assert numbers == list(range(1, 13))


async def test_the_demo_session_against_the_agent(tmp_path: Path) -> None:
    path = SCENARIOS / "demo.yaml"
    result = await run_scenario(load_scenario(path), tmp_path / path.stem)
    failed = [f"{c.name}: measured {c.measured}, limit {c.limit} {c.detail}".strip()
              for c in result.checks if not c.passed]
    assert result.error is None, result.error
    assert result.checks, "a scenario without expectations proves nothing"
    assert not failed, "\n".join(failed) + f"\nagent log: {result.agent_log}"


async def test_the_twelve_items_back_to_back_on_one_agent(tmp_path: Path) -> None:
    steps: list[object] = []
    first_step: dict[int, str] = {}  # combined step index -> item
    for path in ITEMS:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert not raw.get("config") and not raw.get("config_overrides") and not raw.get("rig")
        if steps:
            steps.append({"wait": BETWEEN_ITEMS_S})
        first_step[len(steps) + 1] = path.stem
        item_steps = list(raw["steps"])
        at = next(i for i, step in enumerate(item_steps) if "plug_in" in step)
        item_steps[at] = {**item_steps[at], "plug_in": {**VEHICLE, **item_steps[at]["plug_in"]}}
        steps += item_steps
    scenario = parse_scenario({"name": "gbt34657-back-to-back", "steps": steps})
    result = await run_scenario(scenario, tmp_path / "back_to_back")
    assert result.error is None, result.error
    failed, item = [], ""
    for outcome in result.outcomes:
        item = first_step.get(outcome.step.index, item)
        if outcome.error:
            failed.append(f"{item}: {outcome.step.describe()}: {outcome.error}")
        failed += [f"{item}: {c.name}: measured {c.measured}, limit {c.limit} {c.detail}".strip()
                   for c in outcome.checks if not c.passed]
    assert len(first_step) == 12 and len(result.checks) >= 12 * 3
    assert not failed, "\n".join(failed) + f"\nagent log: {result.agent_log}"
