"""Driver of the control-pilot board (``board_maps.PILOT_BOARD_MAP``, hardware.md).

The safety poll is one FC 04 read of the input block 0x0000-0x0007 at ``PILOT_POLL``
priority; commands are FC 06 writes at ``CONTROL_WRITE``. A duty the board would refuse is
refused here first (``ValueError``: a bug in the caller, not a device fault).
"""

from __future__ import annotations

from drivers.board_maps import (
    PILOT_BOARD_MAP,
    PILOT_SAMPLE_ADDRESS,
    PILOT_SAMPLE_COUNT,
    duty_cmd_is_valid,
)
from drivers.bus import BusScheduler, Priority
from drivers.interfaces import PilotBoardSample
from drivers.registers import Block, Function, decode_block

__all__ = ["PilotBoardDriver", "PilotBoardSample"]

_SAMPLE_BLOCK = Block(
    Function.INPUT,
    PILOT_SAMPLE_ADDRESS,
    PILOT_SAMPLE_COUNT,
    tuple(r for r in PILOT_BOARD_MAP.registers if r.function is Function.INPUT),
)


class PilotBoardDriver:
    """A ``drivers.interfaces.PilotBoard`` on a ``BusScheduler``."""

    def __init__(self, bus: BusScheduler, unit: int = 1) -> None:
        self.bus = bus
        self.unit = unit

    async def read_sample(self) -> PilotBoardSample:
        raw = await self.bus.read(
            self.unit, int(Function.INPUT), PILOT_SAMPLE_ADDRESS, PILOT_SAMPLE_COUNT,
            priority=Priority.PILOT_POLL,
        )
        v = decode_block(_SAMPLE_BLOCK, raw)
        return PilotBoardSample(
            cp_high_mv=int(v["cp_high_mv"]),
            cp_low_mv=int(v["cp_low_mv"]),
            duty_actual=int(v["duty_actual"]),
            cc_ohm=int(v["cc_ohm"]),
            status=int(v["status"]),
            sample_seq=int(v["sample_seq"]),
            temperature_c=round(v["temperature"], 1),
            fw_version=int(v["fw_version"]),
        )

    async def set_duty(self, value: int) -> None:
        """``duty_cmd``: 1000 steady +12 V, 0 steady -12 V, 100..970 PWM (0.1 %)."""
        if not duty_cmd_is_valid(value):
            raise ValueError(f"duty_cmd {value} is not 0, 1000 or 100..970")
        await self._write("duty_cmd", value)

    async def set_watchdog(self, ms: int) -> None:
        """``watchdog_ms``: 0 off; the board goes FAILSAFE without a heartbeat this long."""
        if not 0 <= ms <= 0xFFFF:
            raise ValueError(f"watchdog {ms} ms out of 0..65535")
        await self._write("watchdog_ms", ms)

    async def heartbeat(self) -> None:
        await self._write("heartbeat", 1)

    async def fault_reset(self) -> None:
        await self._write("fault_reset", 1)

    async def _write(self, name: str, value: int) -> None:
        reg = PILOT_BOARD_MAP[name]
        await self.bus.write_register(self.unit, reg.address, value,
                                      priority=Priority.CONTROL_WRITE)
