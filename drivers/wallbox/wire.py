"""Every transaction a wallbox driver runs, declared (``drivers.wire``).

A wallbox of one profile reads its state every poll, pauses or lowers its current at
``SAFETY_WRITE``, raises it at ``CONTROL``, programs its setup, watchdog and fail-safe at
start-up and after a reset, reads back what it programmed every ``verify_s`` and, when no
meter of its own is configured, reads its energy registers every ``energy_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.registers import Block, Function, Register, RegisterMap
from drivers.wallbox.profiles import WallboxProfile
from drivers.wire import Priority, Transaction

VERIFY_MAX_WORDS = 16
VERIFY_MAX_GAP = 0  # contiguous runs only: a gap register may not exist on the real unit
DEFAULT_POLL_S = 0.5
DEFAULT_VERIFY_S = 5.0
PROGRAM_TRIGGER = "start-up and after a wallbox reset"


@dataclass(frozen=True, slots=True)
class WallboxWire:
    """A wallbox driver's transactions; ``write_for`` picks the one a write runs."""

    state: Transaction
    pause: Transaction
    writes: tuple[Transaction, ...]  # every write, ``pause`` among them
    verify: tuple[tuple[Block, Transaction], ...]
    energy: tuple[tuple[Block, Transaction], ...]

    def all(self) -> tuple[Transaction, ...]:
        return (self.state, *self.writes, *(t for _, t in self.verify),
                *(t for _, t in self.energy))

    @property
    def verify_s(self) -> float:
        """How often the programmed registers are read back."""
        return self.verify[0][1].period()

    def write_for(self, function: int, address: int, priority: Priority) -> Transaction:
        for t in self.writes:
            if (t.function, t.address, t.priority) == (function, address, priority):
                return t
        raise KeyError(f"no declared write FC{function:02d} to {address} at {priority.name}")


def write_function(profile: WallboxProfile, reg: Register) -> int:
    """The function code that writes ``reg``: FC 05 for a coil, else the profile's 06 or 16."""
    return 5 if reg.function is Function.COIL else profile.write_function


def programmed_registers(profile: WallboxProfile, *, watchdog: bool,
                         failsafe: bool) -> tuple[Register, ...]:
    """Every register the driver may write (and so reads back)."""
    regs = [w.register for w in profile.setup]
    if failsafe and profile.failsafe_current is not None:
        regs.append(profile.failsafe_current)
    if watchdog and profile.watchdog is not None:
        regs.append(profile.watchdog)
    regs.append(profile.current)
    if profile.disable.register is not None:
        regs.append(profile.disable.register)
    return tuple(regs)


def verify_blocks(regs: tuple[Register, ...]) -> list[Block]:
    if not regs:
        return []
    return RegisterMap("verify", regs).blocks(max_words=VERIFY_MAX_WORDS, max_gap=VERIFY_MAX_GAP)


def wallbox_wire(profile: WallboxProfile, unit: int, *, watchdog: bool = True,
                 failsafe: bool = True, poll_s: float = DEFAULT_POLL_S,
                 verify_s: float = DEFAULT_VERIFY_S,
                 energy_s: float | None = None) -> WallboxWire:
    """``watchdog``/``failsafe``: whether those are programmed; ``energy_s`` None: the
    wallbox's own energy registers are not read (a meter is configured, or it has none)."""
    p = profile

    def write(label: str, reg: Register, priority: Priority, trigger: str) -> Transaction:
        return Transaction(label, unit, write_function(p, reg), reg.address, 1, priority,
                           None, trigger)

    state = Transaction("wallbox state", unit, int(p.state.function), p.state.address, 1,
                        Priority.PILOT_POLL, poll_s)
    dis = p.disable
    by_current = dis.kind == "zero_current" or dis.register is None
    decrease = write("wallbox pause/decrease" if by_current else "wallbox decrease", p.current,
                     Priority.SAFETY_WRITE, "pause or lower current" if by_current
                     else "lower current")
    writes = [write("wallbox current write", p.current, Priority.CONTROL, "higher current"),
              decrease]
    pause = decrease
    if not by_current:
        assert dis.register is not None
        pause = write("wallbox pause", dis.register, Priority.SAFETY_WRITE, "pause")
        writes += [pause, write("wallbox enable", dis.register, Priority.CONTROL, "resume")]
    for setup in p.setup:
        writes.append(write(f"wallbox setup {setup.register.name}", setup.register,
                            Priority.CONTROL, PROGRAM_TRIGGER))
    if failsafe and p.failsafe_current is not None:
        writes.append(write("wallbox fail-safe current", p.failsafe_current, Priority.CONTROL,
                            PROGRAM_TRIGGER))
    if watchdog and p.watchdog is not None:
        writes.append(write("wallbox watchdog", p.watchdog, Priority.CONTROL, PROGRAM_TRIGGER))
    verify = tuple(
        (b, Transaction("wallbox read-back", unit, int(b.function), b.address, b.count,
                        Priority.CONTROL, verify_s))
        for b in verify_blocks(programmed_registers(p, watchdog=watchdog, failsafe=failsafe)))
    energy = () if energy_s is None else tuple(
        (b, Transaction("wallbox energy", unit, int(b.function), b.address, b.count,
                        Priority.METER_READ, energy_s))
        for b in p.meter_blocks())
    return WallboxWire(state, pause, tuple(writes), verify, energy)

