"""The wallbox core's delivery rules W1-W6 (agent/wallbox/delivery.py), one by one.

Each test feeds what the shell would (reads, read-backs, the failures of the writes it was
asked for, fed back at once) and checks what the core asks for next.
"""

from __future__ import annotations

from agent.faults import FaultCode
from agent.pilot import FaultCleared, LimitChanged, Tick
from agent.pilot.classifier import CpLevel
from agent.pilot.delivery import EvLevelChanged
from agent.wallbox.delivery import (
    LOST_REASON,
    Reprogram,
    WallboxDelivered,
    WallboxDelivery,
    WallboxOutput,
    WallboxVerified,
    WallboxWriteFailed,
)
from agent.wallbox.machine import (
    WallboxMachine,
    WallboxReadFailed,
    WallboxSampled,
    WallboxSettings,
    WriteCommand,
)
from agent.wallbox.mapping import DISABLED, command_for
from drivers.wallbox import HEIDELBERG

A16 = command_for(HEIDELBERG, 16.0, 32.0)
A8 = command_for(HEIDELBERG, 8.0, 32.0)
PLUGGED, CHARGING = 5, 7  # Heidelberg's B and C


def _core(lost_s: float = 3.0) -> WallboxDelivery:
    d = WallboxDelivery(WallboxMachine(WallboxSettings(HEIDELBERG, 32.0, lost_s=lost_s)))
    assert d.step(LimitChanged(0.0), 0.0).actions == ()  # as the services start it: paused
    return d


def _writes(out: WallboxDelivered) -> list[WallboxOutput]:
    return [a for a in out.actions if isinstance(a, WriteCommand | Reprogram)]


def _charging(d: WallboxDelivery) -> None:
    d.step(WallboxSampled(PLUGGED), 0.0)
    assert _writes(d.step(LimitChanged(16.0), 0.1)) == [WriteCommand(A16)]
    d.step(WallboxSampled(CHARGING), 0.2)
    assert d.machine.command == A16 and not d.write_pending


def test_w1_a_failed_write_is_resent_forced_after_the_next_answer_only() -> None:
    d = _core()
    _charging(d)
    (w,) = _writes(d.step(LimitChanged(8.0), 1.0))
    assert w == WriteCommand(A8)
    assert d.step(WallboxWriteFailed(w), 1.0).actions == ()  # nothing at once: not answering
    assert d.write_pending
    assert _writes(d.step(WallboxReadFailed(), 1.5)) == []  # still silent: its watchdog holds
    assert _writes(d.step(Tick(), 1.6)) == []
    assert _writes(d.step(WallboxVerified(), 1.7)) == []
    out = d.step(WallboxSampled(CHARGING), 2.0)
    assert out.actions[-1] == WriteCommand(A8, force=True)  # after the read's own actions
    assert not d.write_pending
    assert _writes(d.step(WallboxSampled(CHARGING), 2.5)) == []  # delivered: once


def test_w1_a_resend_that_fails_twice_waits_for_the_next_answer_again() -> None:
    d = _core()
    _charging(d)
    (w,) = _writes(d.step(LimitChanged(8.0), 1.0))
    d.step(WallboxWriteFailed(w), 1.0)
    (resend,) = _writes(d.step(WallboxSampled(CHARGING), 1.5))
    (again,) = d.step(WallboxWriteFailed(resend), 1.5).actions  # W2: once at once
    assert again == WriteCommand(A8, force=True)
    assert d.step(WallboxWriteFailed(again), 1.5).actions == ()
    assert _writes(d.step(WallboxSampled(CHARGING), 2.0)) == [WriteCommand(A8, force=True)]


def test_w1_while_owed_every_write_is_forced_so_a_pause_is_never_skipped() -> None:
    """16 A failed after reaching the wallbox (its answer lost); the pause that follows must
    not be skipped by a driver that still believes the wallbox holds the last delivered value."""
    d = _core()
    d.step(WallboxSampled(PLUGGED), 0.0)  # paused: the driver holds DISABLED
    (w,) = _writes(d.step(LimitChanged(16.0), 0.2))
    d.step(WallboxWriteFailed(w), 0.2)
    out = d.step(LimitChanged(0.0), 0.3)
    assert _writes(out) == [WriteCommand(DISABLED, force=True)]
    assert not d.write_pending  # that forced write settles the re-send
    assert _writes(d.step(WallboxSampled(PLUGGED), 0.5)) == []


def test_w2_a_write_failing_in_the_step_of_an_answer_is_resent_at_once_once() -> None:
    d = _core()
    d.step(WallboxSampled(PLUGGED), 0.0)
    d.step(LimitChanged(16.0), 0.1)
    out = d.step(WallboxSampled(11), 0.5)  # its error state: the disable path, in this step
    (w,) = _writes(out)
    assert w == WriteCommand(DISABLED)
    again = d.step(WallboxWriteFailed(w), 0.5)
    assert again.actions == (WriteCommand(DISABLED, force=True),)
    assert d.step(WallboxWriteFailed(again.actions[0]), 0.5).actions == ()  # once: W1 now
    assert d.write_pending
    assert _writes(d.step(WallboxSampled(11), 1.0)) == [WriteCommand(DISABLED, force=True)]


def test_w2_only_in_the_step_of_an_answer() -> None:
    d = _core()
    _charging(d)
    (w,) = _writes(d.step(LimitChanged(8.0), 1.0))  # a service's step: no answer in it
    assert d.step(WallboxWriteFailed(w), 1.0).actions == ()
    d = _core()
    _charging(d)
    d.step(WallboxSampled(CHARGING), 1.0)  # an answer, then another input
    (w,) = _writes(d.step(LimitChanged(8.0), 1.1))
    assert d.step(WallboxWriteFailed(w), 1.1).actions == ()


def test_w3_the_wallbox_is_reprogrammed_when_it_answers_after_a_loss() -> None:
    d = _core(lost_s=1.0)
    _charging(d)
    out = d.step(Tick(), 1.5)
    assert _writes(out) == [WriteCommand(DISABLED)] and d.machine.active_faults
    d.step(WallboxWriteFailed(WriteCommand(DISABLED)), 1.5)  # silent: the write fails too
    out = d.step(WallboxSampled(CHARGING), 2.0)
    assert FaultCleared(FaultCode.WALLBOX_LOST) in out.actions
    writes = _writes(out)
    # the machine's own write comes first (forced: one is owed), the reprogram last
    assert writes == [WriteCommand(A16, force=True), Reprogram(A16, LOST_REASON)]
    assert out.actions[-1] == Reprogram(A16, LOST_REASON)
    assert not d.reprogram_pending and not d.write_pending
    assert _writes(d.step(WallboxSampled(CHARGING), 2.5)) == []


def test_w3_a_write_of_that_step_that_fails_is_left_to_the_reprogram() -> None:
    d = _core(lost_s=1.0)
    _charging(d)
    d.step(Tick(), 1.5)
    out = d.step(WallboxSampled(CHARGING), 2.0)
    own, reprogram = _writes(out)
    assert isinstance(own, WriteCommand) and isinstance(reprogram, Reprogram)
    assert d.step(WallboxWriteFailed(own), 2.0).actions == ()  # no W2: the reprogram writes it
    assert _writes(d.step(WallboxSampled(CHARGING), 2.5)) == []  # the reprogram was delivered


def test_w4_a_read_back_naming_registers_reprograms_at_once() -> None:
    d = _core()
    _charging(d)
    assert d.step(WallboxVerified(), 1.0).actions == ()
    out = d.step(WallboxVerified(("watchdog_timeout", "standby")), 1.1)
    assert out.actions == (Reprogram(A16, "registers back at other values: "
                                          "watchdog_timeout, standby"),)


def test_w5_a_failed_reprogram_is_tried_again_after_the_next_answer() -> None:
    d = _core()
    _charging(d)
    (r,) = _writes(d.step(WallboxVerified(("standby",)), 1.0))
    assert d.step(WallboxWriteFailed(r), 1.0).actions == ()
    assert d.reprogram_pending
    assert _writes(d.step(WallboxReadFailed(), 1.2)) == []
    # meanwhile a write of the command is forced (the reprogram may have reached the wallbox)
    assert _writes(d.step(LimitChanged(8.0), 1.3)) == [WriteCommand(A8, force=True)]
    out = d.step(WallboxSampled(CHARGING), 1.5)
    assert _writes(out) == [Reprogram(A8, "registers back at other values: standby")]
    assert not d.reprogram_pending


def test_w6_the_letter_is_reported_once_with_its_nominal_plateau() -> None:
    d = _core()
    out = d.step(WallboxSampled(2), 0.0)
    assert EvLevelChanged(None, CpLevel.STATE_1, 12000) in out.actions
    assert not any(isinstance(a, EvLevelChanged) for a in d.step(WallboxSampled(3), 0.5).actions)
    out = d.step(WallboxSampled(PLUGGED), 1.0)
    assert EvLevelChanged(CpLevel.STATE_1, CpLevel.STATE_2, 9000) in out.actions


def test_the_machine_never_forces_and_the_core_writes_only_the_command() -> None:
    d = _core()
    _charging(d)
    (w,) = _writes(d.step(LimitChanged(0.0), 1.0))
    assert w == WriteCommand(DISABLED) and not w.force
