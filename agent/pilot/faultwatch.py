"""Fault detection, latching and clearing for the pilot machine (pure; time is an argument).

Each step the machine calls :meth:`FaultWatch.evaluate` *before* its triggers run, so a fault
seen in a step makes that same step's first action the contactor open. A fault is raised once
(``FaultRaised``) and stays in ``active`` until its ``ClearPolicy`` (``agent.faults``) allows:

- the cause must be gone (re-checked every step from the latest inputs);
- ``CAUSE_GONE``: that is enough;
- ``UNPLUG_OR_RESET``: and the CP has read state 1 (nothing connected) since the fault was
  raised, or a reset is recent. The unplug is remembered: the fault clears once unplugged and
  cause gone, whichever comes last, even if a vehicle is plugged in again meanwhile;
- ``RESET_ONLY``: and a reset is recent (``reset_window_s``);
- ``RESTART``: never (a new machine is needed).

The board's status bits latch in hardware until ``fault_reset``; the core latches its own copy,
so it asks the board to reset (``ResetBoardFaults``) at most every ``board_reset_interval_s``
while a latched bit still shows. The board only clears bits whose cause has gone, so this
turns the bit into "cause present now" without ever clearing the core's latch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.faults import FAULTS, ClearPolicy, FaultCode
from agent.pilot.classifier import CONNECTED_LEVELS, CcState, CpLevel
from agent.pilot.events import Action, FaultCleared, FaultRaised, RelaySampled
from agent.pilot.settings import PilotSettings
from drivers.pilot_status import PilotStatus

if TYPE_CHECKING:
    from agent.pilot.facts import PilotFacts

__all__ = ["STATUS_FAULTS", "FaultWatch"]

# The fault each of the pilot board's status flags raises (every flag has one).
STATUS_FAULTS: tuple[tuple[PilotStatus, FaultCode], ...] = (
    (PilotStatus.RCD_TRIP, FaultCode.RCD_TRIP),
    (PilotStatus.PE_LOSS, FaultCode.PE_LOSS),
    (PilotStatus.OVERTEMP, FaultCode.OVERTEMP),
    (PilotStatus.ESTOP, FaultCode.ESTOP),
    (PilotStatus.FAILSAFE, FaultCode.PILOT_BOARD_FAILSAFE),
    (PilotStatus.SELFTEST_FAIL, FaultCode.PILOT_SELFTEST_FAIL),
)
# The same pairs as plain int masks, computed once: ``int & PilotStatus`` builds a new flag
# object per test (enum.Flag.__and__), which cost more than the rest of a poll cycle's fault
# checks; the machine keeps the status register as a plain int.
_STATUS_MASKS: tuple[tuple[int, FaultCode], ...] = tuple(
    (int(bit), code) for bit, code in STATUS_FAULTS
)
_BAD_CC = frozenset({CcState.OPEN, CcState.SHORT, CcState.OUT_OF_RANGE})
_EVENT_ONLY = frozenset({FaultCode.CONTACTOR_NO_CLOSE, FaultCode.LOCK_FAILED})


class FaultWatch:
    """The latched fault set of one machine."""

    def __init__(self, settings: PilotSettings) -> None:
        self._s = settings
        self._active: dict[FaultCode, str] = {}
        self._raised_now: set[FaultCode] = set()
        self._reset_until = float("-inf")
        self._reset_pending = False
        self._board_reset_at = float("-inf")
        self._unplug_seen: set[FaultCode] = set()  # active faults the CP read state 1 for

    @property
    def active(self) -> frozenset[FaultCode]:
        return frozenset(self._active)

    def detail(self, code: FaultCode) -> str | None:
        return self._active.get(code)

    def raise_(self, m: PilotFacts, code: FaultCode, detail: str, notes: list[Action]) -> None:
        if code in self._active:
            return
        self._active[code] = detail
        self._raised_now.add(code)
        notes.append(FaultRaised(code, detail))
        m.fault_tripped(code)

    def latch_internal(self, detail: str) -> None:
        """The machine caught a bug: latch ``INTERNAL_ERROR`` (clears only by restart)."""
        self._active[FaultCode.INTERNAL_ERROR] = detail

    def reset_requested(self, now: float) -> None:
        self._reset_until = now + self._s.reset_window_s
        self._reset_pending = True

    # --- detection -----------------------------------------------------------------------

    def on_relay(
        self, m: PilotFacts, ev: RelaySampled, now: float, notes: list[Action]
    ) -> None:
        """Feedback checks that need the sample before it updates the machine's view."""
        c, lock = m.contactor, m.lock
        if c.commanded and c.confirmed and not ev.contactor_closed:
            detail = "contactor dropped out while closed"
            self.raise_(m, FaultCode.CONTACTOR_NO_CLOSE, detail, notes)
        if not c.commanded and ev.contactor_closed and now - c.commanded_at >= c.timeout_s:
            self.raise_(
                m, FaultCode.CONTACTOR_WELDED,
                f"mirror contact closed {now - c.commanded_at:.3f} s after the open", notes,
            )
        if lock.commanded and lock.confirmed and not ev.lock_engaged:
            self.raise_(m, FaultCode.LOCK_FAILED, "lock feedback lost while engaged", notes)

    def _causes(self, m: PilotFacts, now: float) -> dict[FaultCode, str]:
        """Faults whose cause is present now (condition faults)."""
        pilot, frozen, relay = m.liveness
        causes: dict[FaultCode, str] = {}
        if relay.lost(now):
            causes[FaultCode.RELAY_BOARD_LOST] = f"no relay sample for {now - relay.last_ok:.3f} s"
        if pilot.lost(now):
            causes[FaultCode.PILOT_BOARD_LOST] = f"no pilot sample for {now - pilot.last_ok:.3f} s"
            return causes
        if frozen.lost(now):
            causes[FaultCode.PILOT_BOARD_FROZEN] = (
                f"sample_seq unchanged for {now - frozen.last_ok:.3f} s"
            )
        level = m.ev_level
        if level is CpLevel.SHORT:
            causes[FaultCode.CP_SHORT] = "CP about 0 V"
        elif level in (CpLevel.INVALID, CpLevel.NEGATIVE):
            causes[FaultCode.CP_INVALID] = f"CP level {level.value}"
        bits = m.status_bits
        if bits:
            for mask, code in _STATUS_MASKS:
                if bits & mask:
                    causes[code] = f"board status bit 0x{mask:02x}"
        if m.diode_bad:
            causes[FaultCode.DIODE_FAULT] = "negative plateau above the diode limit"
        cc = m.cc_stable
        if (
            self._s.connection == "socket" and level in CONNECTED_LEVELS
            and cc is not None and cc.state in _BAD_CC
        ):
            causes[FaultCode.CC_INVALID] = f"CC {cc.state.value}"
        return causes

    def begin_step(self) -> None:
        """Faults raised in this step (by an input check or by ``evaluate``) may not also
        clear in it: a raise must reach the outputs, so the contactor is opened first."""
        self._raised_now.clear()

    def evaluate(self, m: PilotFacts, now: float, notes: list[Action]) -> None:
        """Raise what is present, then clear what may clear."""
        causes = self._causes(m, now)
        for code, detail in causes.items():
            self.raise_(m, code, detail, notes)
        if m.meter_lost(now) and (m.contactor.commanded or m.wants_power()):
            self.raise_(m, FaultCode.METER_LOST, "meter silent beyond the grace time", notes)
        c, lock, (_, _, relay) = m.contactor, m.lock, m.liveness
        # Only a relay sample taken after the deadline can say the contactor did not close; a
        # board that went silent meanwhile says nothing about it: that is RELAY_BOARD_LOST (a
        # loss of sight, "cause gone"), raised at relay_lost_s and opening the contactor then.
        if c.commanded and c.overdue(now) and relay.last_ok >= c.deadline:
            self.raise_(
                m, FaultCode.CONTACTOR_NO_CLOSE, "no mirror contact within the timeout", notes
            )
        if lock.commanded and lock.overdue(now):
            self.raise_(m, FaultCode.LOCK_FAILED, "no lock feedback within the timeout", notes)
        if c.commanded and m.overcurrent.tripped(now):
            detail = f"above {m.overcurrent.threshold(now):.1f} A for the persistence time"
            self.raise_(m, FaultCode.OVERCURRENT, detail, notes)
        self._clear(m, now, causes, notes)

    def _present(
        self, m: PilotFacts, code: FaultCode, now: float, causes: set[FaultCode]
    ) -> bool:
        if code is FaultCode.METER_LOST:
            return m.meter_lost(now)
        if code is FaultCode.OVERCURRENT:  # a current the open contactor cut is not present
            return m.contactor.commanded and m.overcurrent.since is not None
        if code is FaultCode.CONTACTOR_WELDED:
            return m.contactor.commanded or m.contactor.fb is not False
        if code in _EVENT_ONLY:
            return False
        if code is FaultCode.INTERNAL_ERROR:
            return True
        # Condition faults: while the pilot board is silent their cause is unknown -> present.
        return code in causes or FaultCode.PILOT_BOARD_LOST in causes

    def _clear(
        self, m: PilotFacts, now: float, causes: dict[FaultCode, str], notes: list[Action]
    ) -> None:
        reset = now <= self._reset_until
        if m.ev_level is CpLevel.STATE_1 and m.pilot_fresh(now):
            self._unplug_seen.update(self._active)
        for code in sorted(self._active):
            if code in self._raised_now or self._present(m, code, now, set(causes)):
                continue
            policy = FAULTS[code].clear
            unplugged = code in self._unplug_seen
            if (
                policy is ClearPolicy.CAUSE_GONE
                or (policy is ClearPolicy.UNPLUG_OR_RESET and (reset or unplugged))
                or (policy is ClearPolicy.RESET_ONLY and reset)
            ):
                del self._active[code]
                self._unplug_seen.discard(code)
                notes.append(FaultCleared(code))

    # --- board reset and deadlines ---------------------------------------------------------

    def _bits_latched(self, m: PilotFacts) -> bool:
        bits = m.status_bits
        return bool(bits) and any(
            bits & mask and code in self._active for mask, code in _STATUS_MASKS
        )

    def board_reset_due(self, m: PilotFacts, now: float) -> bool:
        """Whether to emit ``ResetBoardFaults`` now (records that it was emitted)."""
        due = self._reset_pending or (
            self._bits_latched(m) and now - self._board_reset_at >= self._s.board_reset_interval_s
        )
        if due:
            self._reset_pending = False
            self._board_reset_at = now
        return due

    def deadline(self, m: PilotFacts, now: float) -> float | None:
        if self._bits_latched(m):
            return self._board_reset_at + self._s.board_reset_interval_s
        return None
