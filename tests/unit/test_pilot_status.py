"""The core's board-status rules follow the driver's typed flag set, not a copy of its bits."""

from __future__ import annotations

from agent.faults import FAULTS
from agent.pilot.faultwatch import STATUS_FAULTS
from drivers.board_maps import PILOT_BOARD_MAP, PilotStatus


def test_every_status_flag_raises_a_fault_of_its_own() -> None:
    flags = [flag for flag, _ in STATUS_FAULTS]
    assert sorted(flags) == sorted(PilotStatus), "a board status flag without a fault rule"
    codes = [code for _, code in STATUS_FAULTS]
    assert len(set(codes)) == len(codes)
    assert all(code in FAULTS for code in codes)


def test_the_flags_fit_the_status_register() -> None:
    assert PILOT_BOARD_MAP["status"].dtype.words == 1
    assert max(PilotStatus) < 1 << 16
