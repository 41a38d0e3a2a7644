"""When the control loop may poll at its idle periods (README decisions, "idle polls").

The safety poll runs at ``poll_ms`` whenever something can change that has a reaction limit;
only while nothing can does it stretch to ``idle_poll_ms``. Both predicates look at the pure
machine's read-only view and the shell's own flags, and decide nothing about charging.
"""

from __future__ import annotations

from agent.pilot import PilotMachine, PilotState
from agent.pilot.profiles import DUTY_STEADY_POSITIVE


def pilot_idle(m: PilotMachine, *, read_ok: bool, write_pending: bool) -> bool:
    """No vehicle (settled, not mid-debounce), contactor open and confirmed open, steady +12 V,
    no fault, no write pending, and the last read answered. State 1 has nothing to switch
    off; a plug-in is seen at the next idle poll and debounced at the fast one."""
    return (m.state is PilotState.IDLE and read_ok and m.level_settled
            and not m.contactor_commanded and m.contactor_confirmed
            and m.duty_commanded == DUTY_STEADY_POSITIVE and not m.active_faults
            and not write_pending)


def relay_idle(m: PilotMachine, *, read_ok: bool, open_pending: bool) -> bool:
    """The mirror contacts are not due to move: the contactor commanded open and confirmed
    open, the lock confirmed where it was commanded. Any switch reads them on the next cycle
    and at ``poll_ms`` until confirmed."""
    return (read_ok and not m.contactor_commanded and m.contactor_confirmed
            and m.lock.confirmed and not open_pending)
