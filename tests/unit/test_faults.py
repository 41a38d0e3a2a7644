"""The fault catalog is complete, stable and documented."""

from __future__ import annotations

from pathlib import Path

from agent.faults import FAULTS, ClearPolicy, FaultCode, render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "faults.md"

REQUIRED = {
    "CP_SHORT", "CP_INVALID", "DIODE_FAULT", "PE_LOSS", "RCD_TRIP", "ESTOP", "OVERTEMP",
    "OVERCURRENT", "CONTACTOR_WELDED", "CONTACTOR_NO_CLOSE", "LOCK_FAILED", "CC_INVALID",
    "PILOT_BOARD_LOST", "PILOT_BOARD_FROZEN", "PILOT_BOARD_FAILSAFE", "PILOT_SELFTEST_FAIL",
    "RELAY_BOARD_LOST", "METER_LOST", "INTERNAL_ERROR",
}


def test_catalog_has_every_code_with_metadata() -> None:
    assert {str(c) for c in FaultCode} >= REQUIRED
    assert set(FAULTS) == set(FaultCode)
    for code, info in FAULTS.items():
        assert info.code is code and info.description and info.clearing and info.source


def test_codes_are_their_own_stable_strings() -> None:
    assert all(str(code) == code.name for code in FaultCode)


def test_safety_classification() -> None:
    assert FAULTS[FaultCode.CONTACTOR_WELDED].clear is ClearPolicy.RESET_ONLY
    assert not FAULTS[FaultCode.PILOT_BOARD_LOST].safety
    assert FAULTS[FaultCode.PE_LOSS].safety and FAULTS[FaultCode.CP_SHORT].safety


def test_checked_in_catalog_is_generated() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown()
