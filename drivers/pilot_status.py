"""The pilot board's status flags (hardware.md), typed: one definition for the driver's map,
the core's fault rules and the simulator. Pure data, so the core imports it without the wire."""

from __future__ import annotations

from enum import IntFlag


class PilotStatus(IntFlag):
    """Bits of the pilot board's ``status`` register; they latch until ``fault_reset``."""

    RCD_TRIP = 1 << 0
    PE_LOSS = 1 << 1
    OVERTEMP = 1 << 2
    ESTOP = 1 << 3
    FAILSAFE = 1 << 4
    SELFTEST_FAIL = 1 << 5
