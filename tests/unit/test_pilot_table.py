"""The state table is complete for CP levels, consistent, and the doc is generated from it."""

from __future__ import annotations

from pathlib import Path

from agent.pilot import PilotState, Trigger, render_markdown
from agent.pilot.table import IGNORED, LEVEL_TRIGGERS, TABLE, TRANSITIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "pilot-state-machine.md"


def test_every_state_and_cp_level_pair_is_a_row_or_explicitly_ignored() -> None:
    for state in PilotState:
        for trigger in LEVEL_TRIGGERS.values():
            in_table = (state, trigger) in TRANSITIONS
            ignored = (state, trigger) in IGNORED
            assert in_table != ignored, (state, trigger)


def test_rows_are_unique_and_cite_a_source() -> None:
    assert len(TRANSITIONS) == len(TABLE)
    assert all(row.clause for row in TABLE)
    assert not set(TRANSITIONS) & set(IGNORED)


def test_every_non_fault_state_reaches_fault_and_fault_leaves_only_by_clearing() -> None:
    for state in PilotState:
        if state is not PilotState.FAULT:
            assert TRANSITIONS[(state, Trigger.FAULT_RAISED)].target is PilotState.FAULT
    exits = [r for r in TABLE if r.source is PilotState.FAULT]
    assert [r.trigger for r in exits] == [Trigger.FAULTS_CLEARED]


def test_unplug_always_leads_to_idle() -> None:
    for state in PilotState:
        row = TRANSITIONS.get((state, Trigger.CP_1))
        assert row is None or row.target is PilotState.IDLE


def test_the_only_way_into_charging_is_a_confirmed_close_or_resuming_a_pause() -> None:
    into = {(r.source, r.trigger) for r in TABLE if r.target is PilotState.CHARGING}
    assert into == {
        (PilotState.CLOSING, Trigger.CONTACTOR_CONFIRMED),
        (PilotState.PAUSING, Trigger.OFFER_READY),
    }


def test_checked_in_doc_is_generated() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown()
