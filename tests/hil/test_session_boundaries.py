"""Session boundaries end to end (issue 9): one agent on the example config, one vehicle after
another, after every kind of contactor open.

- A fault of each clear policy ("unplug or reset": PE loss, overcurrent, CP short; "cause
  gone": frozen pilot board; "reset only": welded contactor), then unplug and replug after
  0.5 s, 2 s or 10 s: the next plug-in gets PWM within the 2 s of GB/T 34657.1 item 1 and
  charges (after the welded contactor: only once an operator reset it).
- Back-to-back sessions after each other kind of open: our pause by limit, a user stop, the
  EV opening S2, an unplug under load. The pause by limit also shows that the minimum off
  time (60 s in the example config) still holds within one session.

Every time is taken from the rig's own timeline (see ``hil/scenario_runner.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hil.scenario import RunResult, parse_scenario
from hil.scenario_runner import run_scenario

pytestmark = pytest.mark.hil

CHARGE: list[dict[str, Any]] = [
    {"expect": {"pwm": "on", "within_s": 2, "measure": "replug_to_pwm"}},
    {"expect": {"no_fault": True, "within_s": 1}},
    {"close_s2": {}},
    {"expect": {"contactor": "closed", "within_s": 3}},
]


def replug(after_s: float, case: str) -> list[dict[str, Any]]:
    """Unplug, stay unplugged ``after_s``, plug in again and charge."""
    return [
        {"unplug": {}},
        {"expect": {"pwm": "off", "within_ms": 100}},
        {"wait": after_s},
        {"plug_in": {"cable_a": 32}, "note": f"{case}: plugged in again after {after_s:g} s"},
        *CHARGE,
    ]


STEPS: list[dict[str, Any]] = [
    {"plug_in": {"cable_a": 32}, "note": "first session"},
    *CHARGE,
    # --- opens that are not faults -------------------------------------------------------
    {"agent": {"limit": 4}, "note": "our pause by limit (below 6 A)"},
    {"expect": {"contactor": "open", "within_s": 6}},
    {"agent": {"limit": None}},
    {"expect": {"pwm": "off", "hold_s": 2, "measure": "min_off_within_the_session"}},
    *replug(0.5, "after a pause by limit"),
    {"agent": "stop", "note": "a user stop"},
    {"expect": {"contactor": "open", "within_s": 6}},
    *replug(2.0, "after a user stop"),
    {"open_s2": {}, "note": "the EV stops (S2 open)"},
    {"expect": {"contactor": "open", "within_ms": 100}},
    *replug(0.5, "after an EV stop"),
    {"unplug": {}, "note": "unplug under load"},
    {"expect": {"contactor": "open", "within_ms": 100}},
    {"wait": 0.5},
    {"plug_in": {"cable_a": 32}},
    *CHARGE,
    # --- "unplug or reset" -----------------------------------------------------------------
    {"inject": {"pe_loss": True}, "note": "PE loss (unplug or reset; a latched board bit)"},
    {"expect": {"contactor": "open", "within_ms": 100}},
    {"expect": {"fault": "PE_LOSS", "within_s": 1}},
    {"clear": "pe_loss"},
    *replug(0.5, "after PE loss"),
    {"inject": {"overcurrent": {"current_a": 40}},
     "note": "overcurrent (unplug or reset): the EV draws 40 A on a 32 A offer"},
    {"expect": {"cut_between_s": [5, 10], "measure": "overcurrent_to_cut"}},
    {"expect": {"fault": "OVERCURRENT", "within_s": 1}},
    {"clear": "overcurrent"},
    *replug(0.5, "after an overcurrent cut (quick unplug)"),
    {"inject": {"cp_short": True}, "note": "CP to PE (unplug or reset)"},
    {"expect": {"contactor": "open", "within_ms": 100}},
    {"expect": {"fault": "CP_SHORT", "within_s": 1}},
    {"clear": "cp_short"},
    *replug(10.0, "after a CP short"),
    # --- "cause gone" ----------------------------------------------------------------------
    {"inject": {"pilot_freeze": True}, "note": "the pilot board freezes (cause gone)"},
    {"expect": {"contactor": "open", "within_ms": 200}},
    {"clear": "pilot_freeze"},
    {"expect": {"no_fault": True, "within_s": 2}},
    *replug(2.0, "after a frozen pilot board"),
    # --- "reset only" ----------------------------------------------------------------------
    {"expect": {"current_a": 32, "within_s": 2}, "note": "welded contactor (reset only)"},
    {"inject": {"contactor_weld": True}},  # the closed contacts weld
    {"open_s2": {}},
    {"expect": {"fault": "CONTACTOR_WELDED", "within_s": 2}},
    {"clear": "contactor_weld"},
    {"unplug": {}},
    {"wait": 0.5},
    {"plug_in": {"cable_a": 32}},
    {"expect": {"pwm": "off", "hold_s": 1, "measure": "welded_needs_a_reset"}},
    {"agent": "reset"},
    *CHARGE,
    {"unplug": {}},
    {"expect": {"contactor": "open", "within_ms": 100}},
]


def failures(result: RunResult) -> list[str]:
    """Each failed check with the case it belongs to (the last note before it)."""
    out, case = [], "start"
    for outcome in result.outcomes:
        case = outcome.step.note or case
        if outcome.error:
            out.append(f"[{case}] step {outcome.step.index} {outcome.step.describe()}: "
                       f"{outcome.error}")
        out += [f"[{case}] step {outcome.step.index} {c.name}: measured {c.measured}, "
                f"limit {c.limit} {c.detail}".rstrip()
                for c in outcome.checks if not c.passed]
    return out


async def test_every_open_and_every_clear_policy_then_the_next_session(tmp_path: Path) -> None:
    scenario = parse_scenario({"name": "session-boundaries", "steps": STEPS})
    result = await run_scenario(scenario, tmp_path / "sessions")
    assert result.error is None, result.error
    replugs = [c for c in result.checks if c.name == "replug_to_pwm"]
    assert len(replugs) == 10, [c.name for c in result.checks]
    failed = failures(result)
    assert not failed, "\n".join(failed) + f"\nagent log: {result.agent_log}"
