"""Register maps of the pilot board and the relay board (../shared/specs/hardware.md).

Data only. The drivers (``drivers.pilot_board``, ``drivers.relay_board``) read and write these;
the HIL simulators serve exactly the same tables from the device side.
"""

from __future__ import annotations

from drivers.pilot_status import PilotStatus as PilotStatus  # the status register's bits
from drivers.registers import DataType, Function, Register, RegisterMap

# --- pilot board (unit 1 on the control bus) ------------------------------------------------

DUTY_STEADY_POSITIVE = 1000  # duty_cmd/duty_actual 1000 = steady +12 V, no PWM
DUTY_STEADY_NEGATIVE = 0  # 0 = steady -12 V: supply unavailable / fault
DUTY_PWM_MIN = 100  # 10.0 %
DUTY_PWM_MAX = 970  # 97.0 %
CC_OPEN_OHM = 0xFFFF
WATCHDOG_DEFAULT_MS = 3000


def duty_cmd_is_valid(value: int) -> bool:
    """What the board accepts in ``duty_cmd``; anything else gets Modbus exception 03."""
    return value in (DUTY_STEADY_NEGATIVE, DUTY_STEADY_POSITIVE) or (
        DUTY_PWM_MIN <= value <= DUTY_PWM_MAX
    )


_IR = Function.INPUT
_HR = Function.HOLDING

PILOT_BOARD_MAP = RegisterMap(
    "pilot-board",
    (
        Register("cp_high_mv", 0x0000, _IR, DataType.I16, unit="mV", doc="positive CP plateau"),
        Register("cp_low_mv", 0x0001, _IR, DataType.I16, unit="mV", doc="negative CP plateau"),
        Register("duty_actual", 0x0002, _IR, DataType.U16, unit="0.1%"),
        Register("cc_ohm", 0x0003, _IR, DataType.U16, unit="ohm", doc="0xFFFF open, 0 short"),
        Register("status", 0x0004, _IR, DataType.U16, doc="PilotStatus bits, latched"),
        Register("sample_seq", 0x0005, _IR, DataType.U16, doc="moves at least every 10 ms"),
        Register("temperature", 0x0006, _IR, DataType.I16, scale=0.1, unit="degC"),
        Register("fw_version", 0x0007, _IR, DataType.U16),
        Register("duty_cmd", 0x0100, _HR, DataType.U16, unit="0.1%", writable=True),
        Register("watchdog_ms", 0x0101, _HR, DataType.U16, unit="ms", writable=True),
        Register("heartbeat", 0x0102, _HR, DataType.U16, writable=True),
        Register("fault_reset", 0x0103, _HR, DataType.U16, writable=True),
    ),
)

# The safety poll reads the whole input block 0x0000-0x0007 in one FC 04 transaction.
PILOT_SAMPLE_ADDRESS = 0x0000
PILOT_SAMPLE_COUNT = 8

# --- relay board (unit 2 on the control bus) ------------------------------------------------

RELAY_BOARD_MAP = RegisterMap(
    "relay-board",
    (
        Register("contactor", 0x0000, Function.COIL, DataType.BIT, writable=True),
        Register("lock", 0x0001, Function.COIL, DataType.BIT, writable=True),
        Register("contactor_feedback", 0x0000, Function.DISCRETE_INPUT, DataType.BIT),
        Register("lock_feedback", 0x0001, Function.DISCRETE_INPUT, DataType.BIT),
    ),
)
