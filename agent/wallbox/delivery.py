"""Delivery: the rules that get the wallbox machine's command onto a real wallbox (pure).

The session machine (``machine.py``) commands each change once and takes it as done. A
wallbox sits on a serial bus that loses writes, and it may reset to its defaults (standby on,
no watchdog, its own maximum current) without telling anyone; what to do then is decided here,
so the shell only pumps: it feeds what it read (``WallboxSampled``, ``WallboxReadFailed``, a
read-back ``WallboxVerified``), what failed (``WallboxWriteFailed``), and applies what comes
back, in order, the answer to a failed write at once. A write is delivered unless its
``WallboxWriteFailed`` follows before the next other input (as ``agent.pilot.delivery``).
Rules, each with its reason:

- W1 re-send after an answer: a write of the command that failed is re-sent, forced (every
  register of the command, whatever the driver believes the wallbox holds), after the next read
  the wallbox answers. Not while it is silent: its own watchdog, which the agent programmed,
  holds the fail-safe current meanwhile. Until a forced write is delivered, every write of the
  command is forced too, and it settles the re-send: a Modbus write whose answer was lost may
  have been applied, so the driver's idea of what the wallbox holds is void (unforced, a pause
  back to the command the driver last delivered would be skipped, and the wallbox left at the
  current of the write that "failed").
- W2 at once: a write that fails in the step of a read the wallbox answered (the machine's, or
  W1's re-send) is re-sent at once, forced, once: the wallbox answers, so one frame was lost.
  If that fails too it waits for the next answer (W1): a wallbox that stops answering is not
  written at in a loop.
- W3 reprogram after a loss: when ``WALLBOX_LOST`` clears, program the wallbox again (setup,
  watchdog, fail-safe) and write the command forced, after that read's own actions: it may have
  reset while the agent could not see it, and a reset wallbox forgot all of it.
- W4 reprogram after a read-back: a ``WallboxVerified`` naming registers that no longer hold
  what was written means a reset: program again, at once.
- W5 a reprogram that failed is tried again after the next read the wallbox answers. A
  reprogram writes the command forced, so a pending one settles W1 (it goes first, and a write
  of its step that fails is left to it).
- W6 notes: a change of the wallbox's letter is reported once, with the letter's nominal CP
  plateau (the wallbox measures the real one; the agent cannot see it).

Every rule only ever writes the command the machine commands now: none can raise the current
above it or enable what the machine disables. They hold when the machine has latched
``INTERNAL_ERROR`` too (it then commands the disable path and answers nothing else), so a
disable path is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.faults import FaultCode
from agent.pilot.classifier import CpLevel
from agent.pilot.delivery import EvLevelChanged
from agent.pilot.events import FaultCleared
from agent.wallbox.machine import (
    WallboxAction,
    WallboxEvent,
    WallboxMachine,
    WallboxSampled,
    WriteCommand,
)
from drivers.wallbox.profiles import WallboxCommand

__all__ = [
    "LOST_REASON",
    "NOMINAL_CP_MV",
    "Reprogram",
    "WallboxDelivered",
    "WallboxDelivery",
    "WallboxInput",
    "WallboxOutput",
    "WallboxVerified",
    "WallboxWrite",
    "WallboxWriteFailed",
]

# W6: the nominal CP plateau of each letter the wallbox reports.
NOMINAL_CP_MV = {CpLevel.STATE_1: 12000, CpLevel.STATE_2: 9000, CpLevel.STATE_3: 6000,
                 CpLevel.STATE_D: 3000, CpLevel.INVALID: 0, CpLevel.NEGATIVE: -12000}
LOST_REASON = "answers again after a loss"


@dataclass(frozen=True, slots=True)
class Reprogram:
    """Program the wallbox again (setup writes, watchdog, fail-safe), then write ``command``
    forced (W3-W5); ``reason`` says why (it goes to the log)."""

    command: WallboxCommand
    reason: str


@dataclass(frozen=True, slots=True)
class WallboxVerified:
    """A read-back of what was programmed: ``changed`` names the registers that no longer hold
    what was written (empty: all of them do)."""

    changed: tuple[str, ...] = ()


WallboxWrite = WriteCommand | Reprogram


@dataclass(frozen=True, slots=True)
class WallboxWriteFailed:
    """The shell could not apply ``action`` (the wallbox did not answer, or refused)."""

    action: WallboxWrite


WallboxInput = WallboxEvent | WallboxVerified | WallboxWriteFailed
WallboxOutput = WallboxAction | Reprogram | EvLevelChanged


@dataclass(frozen=True, slots=True)
class WallboxDelivered:
    """What one input asks of the shell: writes and notes in order, and when to call again."""

    actions: tuple[WallboxOutput, ...]
    next_deadline: float | None


class WallboxDelivery:
    """The machine of one wallbox plus the rules W1-W6. Not thread-safe; one owner."""

    def __init__(self, machine: WallboxMachine) -> None:
        self.machine = machine
        self._deadline: float | None = None
        self._write_pending = False  # W1: the command must be written again, forced
        self._reprogram_pending = False  # W3, W5
        self._reprogram_why = LOST_REASON
        # set only in the step of an answered read, for the failures the shell reports in it:
        self._retry_at_once = False  # W2: a write of it failed: re-send it now
        self._reprogram_queued = False  # W5: a reprogram follows, which writes the command
        self._ev_level: CpLevel | None = None

    @property
    def write_pending(self) -> bool:
        return self._write_pending

    @property
    def reprogram_pending(self) -> bool:
        return self._reprogram_pending

    def step(self, inp: WallboxInput, now: float) -> WallboxDelivered:
        """Feed one input at ``now``; the returned writes go to the wallbox in order."""
        out: list[WallboxOutput] = []
        if isinstance(inp, WallboxWriteFailed):
            self._failed(inp.action, out)
            return WallboxDelivered(tuple(out), self._deadline)
        self._retry_at_once = self._reprogram_queued = False
        match inp:
            case WallboxVerified(changed=changed) if changed:  # W4
                out.append(self._reprogram(
                    f"registers back at other values: {', '.join(changed)}"))
            case WallboxVerified():
                pass
            case WallboxSampled():
                wrote = self._machine(inp, now, out)
                if self._reprogram_pending:  # W3, W5 (and it settles W1)
                    out.append(self._reprogram(self._reprogram_why))
                    self._reprogram_queued = True
                elif wrote:  # W2: should that write fail, it is re-sent at once
                    self._retry_at_once = True
                elif self._write_pending:  # W1 (and W2, should the re-send fail)
                    out.append(self._resend())
                    self._retry_at_once = True
            case _:
                self._machine(inp, now, out)
        return WallboxDelivered(tuple(out), self._deadline)

    # --- the machine and what it commands --------------------------------------------------

    def _machine(self, event: WallboxEvent, now: float, out: list[WallboxOutput]) -> bool:
        """Step the machine; True when it wrote the command (that supersedes W1's re-send)."""
        step = self.machine.step(event, now)
        self._deadline = step.next_deadline
        wrote = False
        for action in step.actions:
            if isinstance(action, WriteCommand):
                if self._write_pending:  # W1: forced, and it settles the re-send
                    action = WriteCommand(action.command, force=True)
                    self._write_pending = False
                wrote = True
            elif isinstance(action, FaultCleared) and action.code is FaultCode.WALLBOX_LOST:
                self._reprogram_pending, self._reprogram_why = True, LOST_REASON  # W3
            out.append(action)
        level = self.machine.ev_level
        if level is not None and level != self._ev_level:  # W6
            old, self._ev_level = self._ev_level, level
            out.append(EvLevelChanged(old, level, NOMINAL_CP_MV.get(level, 0)))
        return wrote

    # --- W1-W5: re-sends and reprograms ----------------------------------------------------

    def _failed(self, action: WallboxWrite, out: list[WallboxOutput]) -> None:
        if isinstance(action, Reprogram):  # W5: again after the next answer; W1 meanwhile
            self._reprogram_pending, self._reprogram_why = True, action.reason
            self._reprogram_queued, self._write_pending = False, True
        elif self._reprogram_queued:
            pass  # W5: the reprogram that follows writes the command forced (or fails: W1)
        elif self._retry_at_once:  # W2
            self._retry_at_once = False
            out.append(self._resend())
        else:  # W1: after the next answer
            self._write_pending = True

    def _resend(self) -> WriteCommand:
        self._write_pending = False  # its WallboxWriteFailed sets it again
        return WriteCommand(self.machine.command, force=True)

    def _reprogram(self, why: str) -> Reprogram:
        self._reprogram_pending = self._write_pending = False  # its failure sets W5 again
        return Reprogram(self.machine.command, why)
