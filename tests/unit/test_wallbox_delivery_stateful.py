"""Hypothesis stateful test of the wallbox core *with* its delivery rules, on a wallbox that
loses writes, goes silent and resets.

``Wire`` is a wallbox behind a driver as ``drivers.wallbox.WallboxDriver`` behaves: an
unforced write of the command the driver last delivered puts nothing on the wire; a write
whose answer is lost may have been applied all the same; a reset puts the wallbox back at its
own maximum current with nothing programmed; a lost frame is lost once. Writes go through the
core the way the shell applies them (``agent.shell.wallbox_connector``): in order, a failed one
fed back at once as ``WallboxWriteFailed`` and the answer applied before the rest. Checked:

(a) every write the core asks for carries the command the machine commands at that moment;
(b) once a write has failed, every write is forced until a forced one is delivered (W1);
(c) the first answered read after a failed write asks first for a forced write of the
    command (W1, W3, W5): the command is re-sent before anything else is written;
(d) after a read the wallbox answered with a working line, it holds the machine's command,
    unless it reset without the agent knowing yet (a read-back finds that, W4): a disabled
    command is never lost, and never left at the current of a write that "failed";
(e) after a read-back with a working line, the wallbox is programmed and holds the command,
    unless a failed write is still owed (re-sent after the next state read, (c));
(f) the first answered read after the wallbox was lost programs it again (W3): it may have
    reset while the agent could not see it.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agent.pilot import Authorize, LimitChanged, StopRequested, Tick
from agent.wallbox.delivery import (
    Reprogram,
    WallboxDelivery,
    WallboxInput,
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
from agent.wallbox.mapping import DISABLED
from drivers.wallbox import HEIDELBERG
from drivers.wallbox.profiles import WallboxCommand

DEFAULTS = WallboxCommand(160, True)  # a reset Heidelberg: its own 16 A, nothing programmed


class Wire:
    """The wallbox, its line and the driver's belief about it."""

    def __init__(self) -> None:
        self.held = DISABLED  # what the wallbox's registers say (start-up wrote the safe state)
        self.believed: WallboxCommand | None = DISABLED  # the driver's last delivered command
        self.programmed = True
        self.silent = False  # reads and writes fail, nothing arrives
        self.drop = False  # writes fail (answer lost) while reads work
        self.lands = False  # a dropped write was applied all the same
        self.lose_next = False  # one write of the command loses its frame, then the line works

    def write(self, action: WriteCommand | Reprogram) -> bool:
        forced = isinstance(action, Reprogram) or action.force
        if not forced and self.believed == action.command:
            return True  # the driver skips it: nothing on the wire
        if self.silent:
            return False
        lost_frame = self.lose_next and isinstance(action, WriteCommand)
        if lost_frame:
            self.lose_next = False
        if self.drop or lost_frame:
            if self.lands:
                self.held = action.command
            return False
        self.held = self.believed = action.command
        if isinstance(action, Reprogram):
            self.programmed = True
        return True

    def reset(self) -> None:
        self.held, self.programmed = DEFAULTS, False


class WallboxDeliverySafety(RuleBasedStateMachine):
    @initialize(auth=st.sampled_from(["auto", "remote"]))
    def setup(self, auth: str) -> None:
        self.m = WallboxMachine(WallboxSettings(HEIDELBERG, 32.0, auth,  # type: ignore[arg-type]
                                                lost_s=1.5))
        self.d = WallboxDelivery(self.m)
        self.w = Wire()
        self.now = 0.0
        self.value = 2  # unplugged
        self.owed = False  # a write failed and no forced write was delivered since
        self.feed(LimitChanged(0.0))  # as the services start it: paused

    # --- the shell, as agent.shell.wallbox_connector applies a step -----------------------

    def feed(self, inp: WallboxInput) -> list[WallboxOutput]:
        out = self.d.step(inp, self.now)
        return self.apply(out.actions)

    def apply(self, actions: tuple[WallboxOutput, ...]) -> list[WallboxOutput]:
        writes: list[WallboxOutput] = []
        for action in actions:
            if not isinstance(action, WriteCommand | Reprogram):
                continue
            assert action.command == self.m.command  # (a)
            forced = isinstance(action, Reprogram) or action.force
            assert forced or not self.owed  # (b)
            writes.append(action)
            if self.w.write(action):
                self.owed = self.owed and not forced
            else:
                self.owed = True
                writes += self.apply(self.d.step(WallboxWriteFailed(action), self.now).actions)
        return writes

    def poll(self) -> None:
        self.now += 0.5
        if self.w.silent:
            self.feed(WallboxReadFailed())
            return
        owed = self.owed
        writes = self.feed(WallboxSampled(self.value))
        if owed:  # (c)
            first = writes[0]
            assert isinstance(first, Reprogram) or (
                isinstance(first, WriteCommand) and first.force)
        if not self.w.drop and self.w.programmed:  # (d)
            assert self.w.held == self.m.command

    # --- rules ---------------------------------------------------------------------------

    @rule(value=st.sampled_from([2, 4, 5, 6, 7, 7, 11, 42]), polls=st.integers(1, 4))
    def vehicle(self, value: int, polls: int) -> None:
        self.value = value
        for _ in range(polls):
            self.poll()

    @rule(event=st.sampled_from([LimitChanged(0.0), LimitChanged(8.0), LimitChanged(16.0),
                                 LimitChanged(None), Authorize("tag"), StopRequested("x")]))
    def command(self, event: LimitChanged | Authorize | StopRequested) -> None:
        self.feed(event)

    @rule(silent=st.booleans(), drop=st.booleans(), lands=st.booleans())
    def line(self, silent: bool, drop: bool, lands: bool) -> None:
        self.w.silent, self.w.drop, self.w.lands = silent, drop, lands

    @rule(how=st.sampled_from(["silent", "drop", "drop_lands"]),
          change=st.sampled_from([None, LimitChanged(0.0), LimitChanged(8.0),
                                  LimitChanged(16.0), StopRequested("x")]),
          lost=st.booleans(), reset=st.booleans())
    def outage(self, how: str, change: LimitChanged | StopRequested | None, lost: bool,
               reset: bool) -> None:
        """A write fails (or the wallbox goes silent long enough to be lost), the wallbox may
        reset meanwhile; then the line works again and the wallbox answers."""
        self.w.silent, self.w.drop, self.w.lands = how == "silent", how != "silent", \
            how == "drop_lands"
        if change is not None:
            self.feed(change)
        lost = lost and how == "silent"
        if lost:
            self.now += 2.0
            self.feed(Tick())
            assert self.m.active_faults
        if reset:
            self.w.reset()
        self.w.silent = self.w.drop = False
        self.poll()  # (c), (d)
        if lost:  # (f)
            assert self.w.programmed and self.w.held == self.m.command

    @rule(value=st.sampled_from([2, 5, 7, 11, 42]), lands=st.booleans())
    def frame_lost(self, value: int, lands: bool) -> None:
        """One write frame is lost while the line works: a read the wallbox answered asks for
        a write that fails (W2), or the next one a command asks for does (W1)."""
        self.w.lose_next, self.w.lands, self.value = True, lands, value
        self.poll()  # (d): W2 re-sent it at once

    @rule()
    def wallbox_resets(self) -> None:
        self.w.reset()

    @rule()
    def read_back(self) -> None:
        if self.w.silent:
            return  # the read-back fails: the shell feeds nothing
        changed = () if self.w.programmed else ("watchdog_timeout", "standby")
        self.feed(WallboxVerified(changed))
        if not self.w.drop:  # (e)
            assert self.w.programmed
            assert self.owed or self.w.held == self.m.command

    @rule(seconds=st.sampled_from([0.5, 2.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.feed(Tick())

    @invariant()
    def resend_owed_is_known(self) -> None:
        d = getattr(self, "d", None)
        if d is not None and self.owed:
            assert d.write_pending or d.reprogram_pending


TestWallboxDeliverySafety = WallboxDeliverySafety.TestCase
TestWallboxDeliverySafety.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
