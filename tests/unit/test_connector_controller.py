"""ConnectorController, the real one, against in-memory boards (python-can's virtual bus idea).

The boards implement the driver Protocols of ``drivers/interfaces.py`` the way the hardware
behaves: the pilot board echoes the duty it applied and counts ``sample_seq``, the relay
board's mirror contacts follow its coils, the meter returns readings. Faults are injected at
the board (a write that fails, a duty taken but not applied, a frozen meter); what the
controller does about them is decided by the core, and these tests check that the pump
carries it out: the failed write goes back in, the answer goes out, contactor open first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from agent.faults import FaultCode
from agent.pilot import FaultRaised, LimitChanged, PilotMachine, PilotSettings, SetContactor
from agent.pilot.delivery import OPEN_RETRIES, EvLevelChanged, FeedbackChanged
from agent.shell.connector import ConnectorController, ConnectorTiming
from drivers.errors import DriverIOError
from drivers.interfaces import MeterReading, PilotBoardSample, RelayInputs

CP_MV = {"1": 12000, "2": 9000, "3": 6000}


@dataclass
class Boards:
    """Pilot board, relay board and meter of one connector, plus the vehicle on the cable."""

    cp: str = "1"
    duty: int = 1000
    seq: int = 0
    coil: bool = False
    lock: bool = False
    relay_fails: int = 0  # the next n relay writes fail
    relay_silent: bool = False  # the relay board answers no read (it dropped off the bus)
    duty_ignored: bool = False  # the board acknowledges a duty write but keeps its duty
    meter_frozen: bool = False
    pilot_silent: bool = False  # the pilot board answers no read
    pilot_hung: bool = False  # a pilot read never returns (the control loop is stuck in it)
    in_hung_read: bool = False
    ops: list[str] = field(default_factory=list)  # reads and writes, in the order they came
    on_op: dict[str, Callable[[], None]] = field(default_factory=dict)  # once, at that op
    opens: int = 0  # set_contactor(False) attempts
    duty_writes: list[int] = field(default_factory=list)
    heartbeats: int = 0
    _energy: float = 0.0
    _reading: MeterReading | None = None

    def _did(self, op: str) -> None:
        self.ops.append(op)
        hook = self.on_op.pop(op, None)
        if hook is not None:
            hook()

    # PilotBoard
    async def read_sample(self) -> PilotBoardSample:
        if self.pilot_hung:
            self.in_hung_read = True
            await asyncio.Event().wait()
        if self.pilot_silent:
            raise DriverIOError("no answer", bus="control", unit=1)
        self.ops.append("pilot")
        self.seq = (self.seq + 1) & 0xFFFF
        high = CP_MV[self.cp]
        low = -12000 if 0 < self.duty < 1000 else high
        return PilotBoardSample(high, low, self.duty, 0xFFFF, 0, self.seq, 25.0, 0x0100)

    async def set_duty(self, value: int) -> None:
        self.duty_writes.append(value)
        if not self.duty_ignored:
            self.duty = value

    async def set_watchdog(self, ms: int) -> None:
        pass

    async def heartbeat(self) -> None:
        self.heartbeats += 1

    async def fault_reset(self) -> None:
        pass

    # Contactor
    async def set_contactor(self, closed: bool) -> None:
        self._did("close" if closed else "open")
        self.opens += not closed
        if self.relay_fails:
            self.relay_fails -= 1
            raise DriverIOError("no answer", bus="control", unit=2)
        self.coil = closed

    async def set_lock(self, locked: bool) -> None:
        self.lock = locked

    async def read_inputs(self) -> RelayInputs:
        if self.relay_silent:
            raise DriverIOError("no answer", bus="control", unit=2)
        self._did("relay")
        return RelayInputs(self.coil, self.lock)

    # Meter
    async def read(self) -> MeterReading:
        if self.meter_frozen and self._reading is not None:
            return self._reading
        amps = 10.0 if self.coil else 0.0
        self._energy += amps * 0.01
        self._reading = MeterReading((230.0,), (amps,), 230.0 * amps, self._energy)
        return self._reading


SETTINGS = PilotSettings(  # generous liveness: a loaded test machine must not fake a lost board
    connection="cable", cable_rating_a=32.0, pilot_lost_s=2.0, pilot_frozen_s=2.0,
    relay_lost_s=5.0, meter_grace_s=0.3, min_off_s=0.0)
TIMING = ConnectorTiming(pilot_poll_s=0.005, relay_poll_s=0.02, meter_poll_s=0.01,
                         heartbeat_s=0.05)


@contextlib.asynccontextmanager
async def running(boards: Boards, settings: PilotSettings = SETTINGS,
                  notes: list[object] | None = None) -> AsyncIterator[ConnectorController]:
    ctl = ConnectorController(1, PilotMachine(settings), boards, boards, boards, TIMING)
    if notes is not None:
        ctl.on_event = lambda _cid, note, _now: notes.append(note)
    await ctl.drive_safe_state()
    task = asyncio.get_running_loop().create_task(ctl.run())
    try:
        yield ctl
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for a condition the test needs next (a guard against hanging, not a timing test)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 (the boards are plain objects: poll them)
            await asyncio.sleep(0.005)


async def charging(boards: Boards, ctl: ConnectorController) -> None:
    boards.cp = "3"
    await until(lambda: boards.coil)


async def test_a_session_charges_and_the_notes_reach_the_sink() -> None:
    boards, notes = Boards(), []  # type: ignore[var-annotated]
    async with running(boards, notes=notes) as ctl:
        await charging(boards, ctl)
        assert boards.duty == ctl.machine.duty_commanded != 1000
    assert SetContactor(True) in notes and FeedbackChanged(True) in notes
    assert any(isinstance(n, EvLevelChanged) for n in notes)


async def test_an_open_the_relay_board_drops_is_retried_then_resent() -> None:
    boards = Boards()
    async with running(boards) as ctl:
        await charging(boards, ctl)
        # The board drops off the bus: the open and its immediate retries fail, and no read
        # answers until the test lets it back (else, on a loaded host, the re-send could come
        # before the test looks at the owed open).
        boards.relay_fails, boards.relay_silent = OPEN_RETRIES + 1, True
        before = boards.opens
        boards.cp = "2"  # the vehicle opens S2: the supply opens in the same step
        await until(lambda: not ctl.machine.contactor_commanded
                    and boards.opens - before == OPEN_RETRIES + 1)
        assert boards.coil and ctl.core.open_pending
        boards.relay_silent = False
        await until(lambda: not boards.coil)  # re-sent at the next relay read
        assert boards.opens - before == OPEN_RETRIES + 2
        assert FaultCode.CONTACTOR_WELDED not in ctl.machine.active_faults  # R2 held it


async def test_a_duty_the_board_did_not_apply_is_written_again() -> None:
    boards = Boards()
    async with running(boards) as ctl:
        await charging(boards, ctl)
        boards.duty_ignored = True
        await ctl.feed(LimitChanged(8.0))
        wanted = ctl.machine.duty_commanded
        assert boards.duty != wanted
        boards.duty_ignored = False
        await until(lambda: boards.duty == wanted)
        assert boards.duty_writes.count(wanted) == 2  # the command, then the re-send


async def test_a_frozen_meter_under_load_counts_as_lost_and_opens() -> None:
    boards = Boards()
    async with running(boards) as ctl:
        await charging(boards, ctl)
        await until(lambda: ctl.stats.last_meter is not None
                    and ctl.stats.last_meter.current_a[0] > 1.0)
        boards.meter_frozen = True
        await until(lambda: FaultCode.METER_LOST in ctl.machine.active_faults)
        await until(lambda: not boards.coil)
        assert boards.duty == 1000


async def test_feed_first_goes_through_the_core_before_the_first_poll() -> None:
    boards = Boards(cp="2")
    ctl2 = ConnectorController(1, PilotMachine(SETTINGS), boards, boards, boards, TIMING)
    ctl2.feed_first(LimitChanged(0.0))  # what the orderly service does: nothing until told
    task = asyncio.get_running_loop().create_task(ctl2.run())
    try:
        await until(lambda: ctl2.machine.ev_level is not None and ctl2.stats.cycles > 20)
        assert ctl2.machine.offered_current_a is None and boards.duty == 1000
        await ctl2.feed(LimitChanged(16.0))
        await until(lambda: boards.duty != 1000)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_feed_before_run_does_not_overtake_the_queued_first_inputs() -> None:
    boards = Boards()
    ctl = ConnectorController(1, PilotMachine(SETTINGS), boards, boards, boards, TIMING)
    ctl.feed_first(LimitChanged(0.0))
    await ctl.feed(LimitChanged(16.0))  # the orderly composite, before the task has started
    task = asyncio.get_running_loop().create_task(ctl.run())
    try:
        await until(lambda: ctl.stats.cycles > 5)
        assert ctl.machine.requested_current_a == 16.0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class SkippingClock:
    """The monotonic clock, plus time the agent "was not scheduled" (a spent CPU quota): a
    skip moves the controller's clock on while nothing on the event loop ran."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped

    def skip(self, seconds: float) -> None:
        self.skipped += seconds


@contextlib.asynccontextmanager
async def after_a_skip(boards: Boards, wait_s: float, notes: list[object]
                       ) -> AsyncIterator[tuple[ConnectorController, SkippingClock]]:
    """Charging, then the clock skips past ``pilot_lost_s``: the caller's next input is the
    first thing that happens after the agent "runs again"."""
    clock = SkippingClock()
    timing = dataclasses.replace(TIMING, poll_first_wait_s=wait_s)
    ctl = ConnectorController(1, PilotMachine(SETTINGS), boards, boards, boards, timing,
                              clock=clock)
    ctl.on_event = lambda _cid, note, _now: notes.append(note)
    await ctl.drive_safe_state()
    task = asyncio.get_running_loop().create_task(ctl.run())
    try:
        await charging(boards, ctl)
        await until(lambda: ctl.stats.cycles > 5)
        yield ctl, clock
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_command_after_the_agent_slept_waits_for_the_poll_and_finds_the_board_alive(
        ) -> None:
    boards, notes = Boards(), []  # type: ignore[var-annotated]
    async with after_a_skip(boards, 60.0, notes) as (ctl, clock):  # only the poll ends the wait
        clock.skip(SETTINGS.pilot_lost_s + 1.0)
        await ctl.feed(LimitChanged(10.0))  # stepped first, it would find no sample for 3 s
        assert ctl.stats.inputs_after_poll >= 1
        assert FaultCode.PILOT_BOARD_LOST not in ctl.machine.active_faults
        assert boards.coil and ctl.machine.requested_current_a == 10.0
    assert not [n for n in notes if isinstance(n, FaultRaised)]


async def test_a_board_that_does_not_answer_after_the_agent_slept_is_lost_and_opens() -> None:
    boards, notes = Boards(), []  # type: ignore[var-annotated]
    async with after_a_skip(boards, 60.0, notes) as (ctl, clock):
        boards.pilot_silent = True
        clock.skip(SETTINGS.pilot_lost_s + 1.0)
        await ctl.feed(LimitChanged(10.0))  # the poll it waited for failed: the loop judged
        assert FaultCode.PILOT_BOARD_LOST in ctl.machine.active_faults
        await until(lambda: not boards.coil)
    assert any(isinstance(n, FaultRaised) and n.code is FaultCode.PILOT_BOARD_LOST
               for n in notes)


async def test_when_no_poll_comes_the_command_is_stepped_after_the_wait_and_opens() -> None:
    boards, notes = Boards(), []  # type: ignore[var-annotated]
    async with after_a_skip(boards, 0.05, notes) as (ctl, clock):
        boards.pilot_hung = True  # the control loop is stuck in a read: no poll will come
        await until(lambda: boards.in_hung_read)
        clock.skip(SETTINGS.pilot_lost_s + 1.0)
        await ctl.feed(LimitChanged(10.0))
        assert FaultCode.PILOT_BOARD_LOST in ctl.machine.active_faults
        assert not boards.coil  # the command's own step opened the contactor


async def test_after_the_contactor_open_the_next_pilot_sample_comes_before_the_relay_read(
        ) -> None:
    boards = Boards()
    async with running(boards) as ctl:
        await charging(boards, ctl)
        start = len(boards.ops)
        boards.cp = "1"  # unplugged: the step opens and stops the PWM
        await until(lambda: "open" in boards.ops[start:]
                    and "relay" in boards.ops[boards.ops.index("open", start):])
    after = boards.ops[boards.ops.index("open", start) + 1:]
    assert after[0] == "pilot"  # not the mirror-contact read that the open makes due


async def test_a_stall_while_the_relay_read_is_on_the_wire_reads_the_pilot_before_its_step(
        ) -> None:
    """The loop's own steps come after its pilot step; a stall between them (here while the
    relay read is on the wire) must not make the relay step judge the board silent."""
    boards, notes = Boards(), []  # type: ignore[var-annotated]
    async with after_a_skip(boards, 60.0, notes) as (ctl, clock):
        boards.on_op["relay"] = lambda: clock.skip(SETTINGS.pilot_lost_s + 1.0)
        await until(lambda: "relay" not in boards.on_op and ctl.stats.cycles > 0)
        stalled = len(boards.ops) - 1 - boards.ops[::-1].index("relay")
        await until(lambda: len(boards.ops) > stalled + 1)
        assert boards.ops[stalled + 1] == "pilot"  # read first, then the relay step
        assert ctl.stats.polls_after_stall >= 1
        assert FaultCode.PILOT_BOARD_LOST not in ctl.machine.active_faults
        assert boards.coil
    assert not [n for n in notes if isinstance(n, FaultRaised)]


async def test_a_stall_in_the_close_write_reads_the_pilot_before_the_deadline_tick() -> None:
    """The CI case: the agent was not scheduled right after it closed the contactor; the
    cycle's deadline tick found no sample for the whole stall and opened a healthy session."""
    settings = dataclasses.replace(SETTINGS, contactor_feedback_timeout_s=4.0)
    clock = SkippingClock()
    boards, notes = Boards(), []  # type: ignore[var-annotated]
    ctl = ConnectorController(1, PilotMachine(settings), boards, boards, boards, TIMING,
                              clock=clock)
    ctl.on_event = lambda _cid, note, _now: notes.append(note)
    boards.on_op["close"] = lambda: clock.skip(settings.pilot_lost_s + 1.0)
    await ctl.drive_safe_state()
    task = asyncio.get_running_loop().create_task(ctl.run())
    try:
        await charging(boards, ctl)
        await until(lambda: ctl.stats.polls_after_stall >= 1 and "relay" in boards.ops[
            boards.ops.index("close"):])
        assert FaultCode.PILOT_BOARD_LOST not in ctl.machine.active_faults
        assert boards.coil and ctl.machine.contactor_commanded
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not [n for n in notes if isinstance(n, FaultRaised)]


async def test_a_board_silent_after_a_stall_is_still_judged_by_its_failed_read() -> None:
    boards, notes = Boards(), []  # type: ignore[var-annotated]
    async with after_a_skip(boards, 60.0, notes) as (ctl, clock):

        def stall_and_die() -> None:
            clock.skip(SETTINGS.pilot_lost_s + 1.0)
            boards.pilot_silent = True
        boards.on_op["relay"] = stall_and_die
        await until(lambda: not boards.coil)
        assert FaultCode.PILOT_BOARD_LOST in ctl.machine.active_faults
    assert any(isinstance(n, FaultRaised) and n.code is FaultCode.PILOT_BOARD_LOST
               for n in notes)
