"""Driver of the relay board: main contactor, plug lock and their feedback inputs.

Opening the contactor is the one ``SAFETY_WRITE``: it jumps every queue on its bus. Closing
it is an ordinary ``CONTROL`` write (the core decides when closing is allowed), and so is the
feedback read that confirms it. ``relay_board_wire`` declares them all (``drivers.wire``).
Addresses default to ``board_maps.RELAY_BOARD_MAP``; boards wired differently pass their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.board_maps import RELAY_BOARD_MAP
from drivers.bus import BusScheduler
from drivers.interfaces import RelayInputs
from drivers.registers import Function
from drivers.wire import Priority, Transaction

__all__ = ["RelayBoardDriver", "RelayBoardWire", "RelayInputs", "relay_board_wire"]

DEFAULT_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class RelayBoardWire:
    """Every transaction the relay board driver runs, and where the feedback bits sit."""

    contactor_open: Transaction
    contactor_close: Transaction
    lock: Transaction
    feedback: Transaction
    contactor_feedback_input: int
    lock_feedback_input: int

    def all(self) -> tuple[Transaction, ...]:
        return (self.contactor_open, self.contactor_close, self.lock, self.feedback)


def relay_board_wire(
    unit: int = 2,
    *,
    contactor_coil: int = RELAY_BOARD_MAP["contactor"].address,
    lock_coil: int = RELAY_BOARD_MAP["lock"].address,
    contactor_feedback_input: int = RELAY_BOARD_MAP["contactor_feedback"].address,
    lock_feedback_input: int = RELAY_BOARD_MAP["lock_feedback"].address,
    poll_s: float = DEFAULT_POLL_S,
) -> RelayBoardWire:
    """The relay board's transactions: both feedback inputs in one FC 02 read every
    ``poll_s``, FC 05 coil writes when the core asks."""
    first = min(contactor_feedback_input, lock_feedback_input)
    last = max(contactor_feedback_input, lock_feedback_input)
    coil = 5
    return RelayBoardWire(
        contactor_open=Transaction("contactor open", unit, coil, contactor_coil, 1,
                                   Priority.SAFETY_WRITE, trigger="the core opens"),
        contactor_close=Transaction("contactor close", unit, coil, contactor_coil, 1,
                                    Priority.CONTROL, trigger="the core closes"),
        lock=Transaction("lock", unit, coil, lock_coil, 1, Priority.CONTROL,
                         trigger="lock or unlock"),
        feedback=Transaction("feedback", unit, int(Function.DISCRETE_INPUT), first,
                             last - first + 1, Priority.CONTROL, poll_s),
        contactor_feedback_input=contactor_feedback_input,
        lock_feedback_input=lock_feedback_input,
    )


class RelayBoardDriver:
    """A ``drivers.interfaces.Contactor`` on a ``BusScheduler``, running ``wire``."""

    def __init__(self, bus: BusScheduler, unit: int = 2, *,
                 wire: RelayBoardWire | None = None) -> None:
        self.bus = bus
        self.wire = wire or relay_board_wire(unit)
        self.unit = self.wire.feedback.unit

    async def set_contactor(self, closed: bool) -> None:
        w = self.wire
        await self.bus.run(w.contactor_close if closed else w.contactor_open, (int(closed),))

    async def set_lock(self, locked: bool) -> None:
        await self.bus.run(self.wire.lock, (int(locked),))

    async def read_inputs(self) -> RelayInputs:
        w = self.wire
        bits = await self.bus.run(w.feedback)
        first = w.feedback.address
        return RelayInputs(
            contactor_closed=bool(bits[w.contactor_feedback_input - first]),
            lock_engaged=bool(bits[w.lock_feedback_input - first]),
        )
