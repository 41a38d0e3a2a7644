"""Driver of the relay board: main contactor, plug lock and their feedback inputs.

Opening the contactor is the one ``SAFETY_WRITE``: it jumps every queue on its bus. Closing
it is an ordinary ``CONTROL_WRITE`` (the core decides when closing is allowed). Addresses
default to ``board_maps.RELAY_BOARD_MAP``; boards wired differently pass their own.
"""

from __future__ import annotations

from drivers.board_maps import RELAY_BOARD_MAP
from drivers.bus import BusScheduler, Priority
from drivers.interfaces import RelayInputs
from drivers.registers import Function

__all__ = ["RelayBoardDriver", "RelayInputs"]


class RelayBoardDriver:
    """A ``drivers.interfaces.Contactor`` on a ``BusScheduler``."""

    def __init__(
        self,
        bus: BusScheduler,
        unit: int = 2,
        *,
        contactor_coil: int = RELAY_BOARD_MAP["contactor"].address,
        lock_coil: int = RELAY_BOARD_MAP["lock"].address,
        contactor_feedback_input: int = RELAY_BOARD_MAP["contactor_feedback"].address,
        lock_feedback_input: int = RELAY_BOARD_MAP["lock_feedback"].address,
    ) -> None:
        self.bus = bus
        self.unit = unit
        self.contactor_coil = contactor_coil
        self.lock_coil = lock_coil
        self.contactor_feedback_input = contactor_feedback_input
        self.lock_feedback_input = lock_feedback_input

    async def set_contactor(self, closed: bool) -> None:
        priority = Priority.CONTROL_WRITE if closed else Priority.SAFETY_WRITE
        await self.bus.write_coil(self.unit, self.contactor_coil, closed, priority=priority)

    async def set_lock(self, locked: bool) -> None:
        await self.bus.write_coil(self.unit, self.lock_coil, locked,
                                  priority=Priority.CONTROL_WRITE)

    async def read_inputs(self) -> RelayInputs:
        first = min(self.contactor_feedback_input, self.lock_feedback_input)
        last = max(self.contactor_feedback_input, self.lock_feedback_input)
        bits = await self.bus.read_bits(self.unit, int(Function.DISCRETE_INPUT), first,
                                        last - first + 1, priority=Priority.CONTROL_WRITE)
        return RelayInputs(
            contactor_closed=bits[self.contactor_feedback_input - first],
            lock_engaged=bits[self.lock_feedback_input - first],
        )
