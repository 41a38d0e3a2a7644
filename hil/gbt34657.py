"""The 12 GB/T 34657.1-2017 AC items as one back-to-back scenario, as a test lab runs them.

One agent, the items one after another a few seconds apart (issue 9); used by
``tests/hil/test_gbt34657.py`` and by the starved-CPU bench (P7), which runs it at decreasing
CPU shares. Each item's first plug-in names the default vehicle: the rig's vehicle keeps what a
plug_in set (item 2 ends with a vehicle without S2, item 12 with out-of-limit resistors), and a
lab starts each item with its own vehicle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hil.ev import EvParams
from hil.scenario import RunResult, Scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
ITEMS = sorted(SCENARIOS.glob("gbt34657_*.yaml"))
BETWEEN_ITEMS_S = 3.0
VEHICLE = {key: getattr(EvParams(), key) for key in ("has_s2", "r2_ohm", "r3_ohm", "obc_max_a",
                                                      "follow_delay_s")}


@dataclass(frozen=True)
class BackToBack:
    """The combined scenario and which item each step index starts."""

    scenario: Scenario
    first_step: dict[int, str]

    def failures(self, result: RunResult) -> list[str]:
        """Every failed check and broken step, named by its item."""
        failed, item = [], ""
        for outcome in result.outcomes:
            item = self.first_step.get(outcome.step.index, item)
            if outcome.error:
                failed.append(f"{item}: {outcome.step.describe()}: {outcome.error}")
            failed += [f"{item}: {c.name}: measured {c.measured}, limit {c.limit} "
                       f"{c.detail}".strip() for c in outcome.checks if not c.passed]
        return failed


def back_to_back(items: list[Path] | None = None,
                 between_s: float = BETWEEN_ITEMS_S) -> BackToBack:
    """``items`` (default: all twelve) in order on one agent, ``between_s`` apart."""
    steps: list[Any] = []
    first_step: dict[int, str] = {}
    for path in ITEMS if items is None else items:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if raw.get("config") or raw.get("config_overrides") or raw.get("rig"):
            raise ValueError(f"{path.name}: an item must run on the example config and rig")
        if steps:
            steps.append({"wait": between_s})
        first_step[len(steps) + 1] = path.stem
        item_steps = list(raw["steps"])
        at = next(i for i, step in enumerate(item_steps) if "plug_in" in step)
        item_steps[at] = {**item_steps[at], "plug_in": {**VEHICLE, **item_steps[at]["plug_in"]}}
        steps += item_steps
    scenario = parse_scenario({"name": "gbt34657-back-to-back", "steps": steps})
    return BackToBack(scenario, first_step)
