"""The agent-log excerpt a failing HIL test puts into its message (CI keeps only the message)."""

from __future__ import annotations

import json
from pathlib import Path

from hil.report import log_excerpt


def test_warnings_errors_and_cleared_faults_are_kept_in_order(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    entries = [
        {"event": "agent_ready", "level": "info", "timestamp": "2026-12-05T08:00:00.000000Z"},
        {"connector": 1, "code": "PILOT_BOARD_LOST", "detail": "no pilot sample for 0.136 s",
         "event": "fault_raised", "level": "error", "timestamp": "2026-12-05T08:00:01.250000Z"},
        {"connector": 1, "lag_ms": 118.5, "event": "event_loop_lag", "level": "warning",
         "timestamp": "2026-12-05T08:00:01.251000Z"},
        {"connector": 1, "code": "PILOT_BOARD_LOST", "event": "fault_cleared", "level": "info",
         "timestamp": "2026-12-05T08:00:01.260000Z"},
    ]
    path.write_text("\n".join(json.dumps(e) for e in entries) + "\nnot json\n",
                    encoding="utf-8")
    assert log_excerpt(path).splitlines() == [
        "08:00:01.250 error fault_raised connector=1 code=PILOT_BOARD_LOST "
        "detail=no pilot sample for 0.136 s",
        "08:00:01.251 warning event_loop_lag connector=1 lag_ms=118.5",
        "08:00:01.260 info fault_cleared connector=1 code=PILOT_BOARD_LOST",
    ]
    assert log_excerpt(path, limit=1).splitlines() == [
        "08:00:01.260 info fault_cleared connector=1 code=PILOT_BOARD_LOST"]


def test_a_missing_or_quiet_log_says_so(tmp_path: Path) -> None:
    assert log_excerpt(None) == "(no agent log)"
    quiet = tmp_path / "quiet.log"
    quiet.write_text(json.dumps({"event": "agent_ready", "level": "info"}) + "\n",
                     encoding="utf-8")
    assert log_excerpt(quiet) == "(no warnings, errors or cleared faults)"
