"""One control task per connector: an I/O pump between the boards and the pure core.

The loop is deliberately simple, because its timing is what ``check-config`` promises:

    every pilot poll period:  read the pilot board (PILOT_POLL priority) -> step(PilotSampled)
    every relay poll period:  read the mirror contacts -> step(RelaySampled)
    whenever a deadline falls due: step(Tick)

and every step's writes are applied in the order the core gives them (contactor open first,
SAFETY_WRITE); a write that fails goes back in as ``ActionFailed``. Meter reads and heartbeats
run as separate tasks on their own periods, so a slow meter on its own bus never delays the
safety poll; on a shared bus the scheduler's priorities keep it behind. Nothing here decides
anything: the session machine decides about charging, ``agent.pilot.delivery`` about re-sends,
retries, a duty the board did not take and a frozen meter.

The periods are ``poll_ms`` whenever anything can change that has a reaction limit, and the
slower ``idle_poll_ms`` only while nothing can (``agent.shell.pollrate``: README decisions,
"idle polls"): the first sample that differs, any command, fault or failed read brings the
fast poll back for the next cycle.

An input from outside the loop (a command, a meter reading) waits for the pilot poll when that
poll is overdue (``_poll_first``): after the agent itself was not scheduled (a CPU quota spent,
a stall), the first step is the board's fresh sample, not a command whose step would judge the
board silent for the time the agent slept (README decisions, "Pilot board lost"). The loop's
own relay step and deadline tick do the same after a stall within the cycle (``_sample_first``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from agent.errors import DriverError
from agent.pilot import (
    BoardStatus,
    MeterReadFailed,
    PilotMachine,
    PilotReadFailed,
    PilotSampled,
    RelayReadFailed,
    RelaySampled,
    ResetBoardFaults,
    SetContactor,
    SetDuty,
    SetLock,
    Tick,
)
from agent.pilot.delivery import (
    METER_FROZEN_READS,
    ActionFailed,
    Delivered,
    Delivery,
    DutyMismatch,
    EvLevelChanged,
    FeedbackChanged,
    Heartbeat,
    HeartbeatDue,
    Input,
    MeterFrozen,
    MeterRead,
    Output,
    Resend,
    Write,
)
from agent.shell.handle import ConnectorStats, EventSink, HardwareInfo
from agent.shell.notelog import log_pilot_note
from agent.shell.pollrate import pilot_idle, relay_idle
from drivers.interfaces import Contactor, Meter, PilotBoard

__all__ = [
    "METER_FROZEN_READS",
    "ConnectorController",
    "ConnectorTiming",
    "EvLevelChanged",
    "FeedbackChanged",
]

log = structlog.get_logger("agent.connector")

LOOP_LAG_WARN_S = 0.020  # a poll woken this late means something blocked the event loop
POLL_OVERDUE_S = 0.020  # a pilot poll this late past its period: outside inputs wait for it
_WRITES = (SetContactor, SetDuty, SetLock, ResetBoardFaults, Heartbeat, Resend)
_QUIET = (SetDuty, SetLock, ResetBoardFaults, Heartbeat, Resend, MeterFrozen, DutyMismatch)


@dataclass
class ConnectorTiming:
    pilot_poll_s: float = 0.010
    relay_poll_s: float = 0.100
    pilot_idle_poll_s: float = 0.010  # wiring sets the configured idle periods
    relay_idle_poll_s: float = 0.100
    meter_poll_s: float = 1.0
    heartbeat_s: float = 1.0
    watchdog_ms: int = 3000
    contactor_feedback_timeout_s: float = 0.5
    poll_first_wait_s: float = 0.040  # the most an outside input waits for an overdue poll


class ConnectorController:
    """Runs one connector: the core, its three drivers, and the loop between them."""

    def __init__(
        self,
        connector_id: int,
        machine: PilotMachine,
        pilot: PilotBoard,
        relay: Contactor,
        meter: Meter,
        timing: ConnectorTiming,
        *,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = connector_id
        self.core = Delivery(machine)
        self.machine = machine
        self.pilot = pilot
        self.relay = relay
        self.meter = meter
        self.timing = timing
        self.stats = ConnectorStats()
        self.hardware = HardwareInfo()
        self.on_event = on_event
        self._clock = clock
        self._deadline: float | None = None
        self._relay_due = 0.0
        self._lock = asyncio.Lock()  # one step + its writes at a time
        self._first: list[Input] = []  # fed before the first poll (see ``feed_first``)
        self._pilot_ok = False  # the last pilot read answered
        self._polled_at: float | None = None  # when the last pilot poll ended (None: none yet)
        self._poll_due = 0.0  # when the next pilot poll is due
        self._poll_done = asyncio.Event()  # replaced by a fresh one after every pilot poll
        self._relay_ok = False

    # --- start-up and shut-down ------------------------------------------------------------

    async def drive_safe_state(self) -> None:
        """Contactor open, steady +12 V, lock released: before anything else, and on exit.

        Each write is attempted even if an earlier one fails; the first failure is re-raised
        so start-up does not report READY on a board that did not take the safe state.
        """
        first: DriverError | None = None
        for action in self.machine.safe_state_actions():
            try:
                await self._write(action)  # type: ignore[arg-type]
            except DriverError as exc:
                log.error("safe_state_write_failed", connector=self.id, action=repr(action),
                          error=str(exc))
                first = first or exc
        if first is not None:
            raise first

    async def configure_board(self) -> None:
        """Arm the pilot board's own watchdog: if we stall, the board stops PWM by itself."""
        await self.pilot.set_watchdog(self.timing.watchdog_ms)
        await self.pilot.heartbeat()

    # --- inputs from outside the loop (local API, MQTT) ------------------------------------

    def feed_first(self, event: Input) -> None:
        """Queue an input for the start of ``run``, before the first poll (e.g. a limit of 0
        until the orderly composite is known): it goes through the core like any other."""
        self._first.append(event)

    async def feed(self, event: Input) -> Delivered:
        """Step the core with an external event (limit, authorise, stop, reset)."""
        await self._feed_queued()  # a feed that comes before run() must not overtake them
        await self._poll_first()
        return await self._step(event)

    async def _feed_queued(self) -> None:
        first, self._first = self._first, []
        for event in first:
            await self._step(event)

    # --- the loops -------------------------------------------------------------------------

    async def run(self) -> None:
        await self._feed_queued()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._control_loop(), name=f"c{self.id}-control")
            tg.create_task(self._meter_loop(), name=f"c{self.id}-meter")
            tg.create_task(self._heartbeat_loop(), name=f"c{self.id}-heartbeat")

    async def _control_loop(self) -> None:
        next_at = self._clock()
        cycle_cpu = self.stats.cycle_cpu
        relay_deferred = False
        while True:
            cycle_cpu.mark()
            wrote = await self._pilot_cycle()
            now = self._clock()
            relay_deferred = wrote and not relay_deferred  # see _poll_pilot
            if not relay_deferred and now >= self._relay_due:
                self._relay_due = due = now + self.timing.relay_poll_s
                await self._poll_relay()  # a switch it caused set _relay_due = 0: keep that
                if self._relay_due == due and relay_idle(
                        self.machine, read_ok=self._relay_ok,
                        open_pending=self.core.open_pending):
                    self._relay_due = now + self.timing.relay_idle_poll_s
            if self._deadline is not None and self._clock() >= self._deadline:
                await self._sample_first()
                await self._step(Tick())
            self.stats.cycles += 1
            now = self.stats.last_cycle_at = self._clock()
            period = self.timing.pilot_poll_s
            idle = pilot_idle(self.machine, read_ok=self._pilot_ok,
                              write_pending=self.core.open_pending or self.core.duty_pending)
            if idle and (self._deadline is None
                         or self._deadline > now + self.timing.pilot_idle_poll_s):
                period = self.timing.pilot_idle_poll_s  # a deadline due sooner keeps it fast
            next_at += period
            delay = next_at - now
            if delay < -period:  # fell behind (bus stalled): do not burst to catch up
                next_at = now
                delay = 0.0
            self._poll_due = max(next_at, now)
            await asyncio.sleep(max(delay, 0.0))
            self._note_lag(self._clock() - max(next_at, now))  # behind: a sleep(0) is due now

    def _note_lag(self, lag: float) -> None:
        """How late the poll woke after its sleep: a blocking callback or a slow disk delays
        every control loop by this much (the poll's own wake-up measures it for free). A cycle
        already behind its period sleeps 0 s and is measured too: that is when a block shows."""
        if lag > self.stats.max_loop_lag_s:
            self.stats.max_loop_lag_s = lag
        if lag > LOOP_LAG_WARN_S:
            log.warning("event_loop_lag", connector=self.id, lag_ms=round(lag * 1000, 1))

    async def _poll_first(self) -> None:
        """Wait (at most ``poll_first_wait_s``) for the next pilot poll when it is overdue.

        The core judges the pilot board by the time since its last sample, at every step. After
        the whole agent was not scheduled, a command or a meter reading that is ready the moment
        it runs again would be stepped before the poll, whose round trip takes a few ms, and
        find the board "silent" for as long as the agent slept. The poll goes first instead;
        if it does not come within the wait, the input is stepped anyway and the core judges as
        before: a board that does not answer is still lost within ``pilot_lost_s`` plus this
        wait, and the control loop's own steps never wait for it (after a stall they read the
        board themselves, ``_sample_first``; a failed read is stepped at once)."""
        if self._polled_at is None or self._clock() <= self._poll_due + POLL_OVERDUE_S:
            return
        self.stats.inputs_after_poll += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timing.poll_first_wait_s):
                await self._poll_done.wait()

    async def _pilot_cycle(self) -> bool:
        """The loop's pilot poll and what waits on it; True when its step wrote."""
        wrote = await self._poll_pilot()
        self._polled_at = self._clock()
        done, self._poll_done = self._poll_done, asyncio.Event()
        done.set()
        return wrote

    async def _sample_first(self) -> None:
        """Before a step of the loop's own (the relay read's, the deadline tick): read the
        pilot board first when the core would judge it silent although its last read answered.

        Within one cycle the pilot step comes first; the relay read and the tick follow it.
        If the agent was not scheduled in between (a stall while a write or the relay read
        was on the wire), that step would find no sample for the whole stall and open the
        contactor on a board that is fine: one such stall of 120 ms right after a close held
        a GB/T item-10 session off for the 60 s minimum off time (CI, 2026-12-05). The board
        gets its read first, as outside inputs do (``_poll_first``). A board that does not
        answer is judged by that read; after a failed read (``_pilot_ok`` false) there is no
        extra read, so a silent board costs nothing more and opens as before."""
        if self._pilot_ok and not self.machine.pilot_fresh(self._clock()):
            self.stats.polls_after_stall += 1
            await self._pilot_cycle()

    async def _poll_pilot(self) -> bool:
        """One pilot read and its step; True when the step wrote to a board. Then the relay
        poll waits one cycle: the mirror-contact read and the lock write it may bring would
        otherwise follow the contactor-open and duty writes back to back, and on a starved
        CPU (each transaction a quota period) that chain outlasted ``pilot_lost_s`` with no
        pilot sample in it. One cycle at most, so a step that writes every cycle cannot
        starve the relay board's liveness."""
        try:
            s = await self.pilot.read_sample()
        except DriverError as exc:
            self.stats.pilot_errors += 1
            self._pilot_ok = False
            log.debug("pilot_read_failed", connector=self.id, error=str(exc))
            out = await self._step(PilotReadFailed())
        else:
            self._pilot_ok = True
            self.stats.last_cp_mv = s.cp_high_mv
            out = await self._step(PilotSampled(
                cp_high_mv=s.cp_high_mv, cp_low_mv=s.cp_low_mv, duty_actual=s.duty_actual,
                cc_ohm=s.cc_ohm, status=BoardStatus(s.status), sample_seq=s.sample_seq,
                temperature_c=s.temperature_c))
        return any(isinstance(a, _WRITES) for a in out.actions)

    async def _poll_relay(self) -> None:
        try:
            inputs = await self.relay.read_inputs()
        except DriverError as exc:
            self.stats.relay_errors += 1
            self._relay_ok = False
            log.debug("relay_read_failed", connector=self.id, error=str(exc))
            await self._sample_first()
            await self._step(RelayReadFailed())
            return
        self._relay_ok = True
        await self._sample_first()
        await self._step(RelaySampled(inputs.contactor_closed, inputs.lock_engaged))

    async def _meter_loop(self) -> None:
        while True:
            try:
                r = await self.meter.read()
            except DriverError as exc:
                self.stats.meter_errors += 1
                log.debug("meter_read_failed", connector=self.id, error=str(exc))
                await self._poll_first()
                await self._step(MeterReadFailed())
            else:
                self.stats.last_meter = r
                await self._poll_first()
                await self._step(MeterRead(r.current_a, (
                    r.voltage_v, r.power_w, r.energy_import_wh, r.frequency_hz, r.pf,
                    r.energy_export_wh)))
            await asyncio.sleep(self.timing.meter_poll_s)

    async def _heartbeat_loop(self) -> None:
        while True:
            async with self._lock:
                now = self._clock()
                out = self.core.step(HeartbeatDue(), now)
                if out.actions != (Heartbeat(),):  # a duty re-send: under the lock like any
                    await self._apply(out.actions, now)
            if out.actions == (Heartbeat(),):  # changes nothing the core decides: no need to
                await self._apply(out.actions, now)  # hold a control step for its transaction
            await asyncio.sleep(self.timing.heartbeat_s)

    # --- stepping and applying -------------------------------------------------------------

    async def _step(self, event: Input) -> Delivered:
        async with self._lock:
            now = self._clock()
            out = self.core.step(event, now)
            self._deadline = out.next_deadline
            await self._apply(out.actions, now)
            return out

    async def _apply(self, actions: tuple[Output, ...], now: float) -> None:
        """Apply in order; a failed write goes back to the core, whose answer (a retry, or
        nothing) is applied at once, before the rest (it is bounded by the core's rules)."""
        for action in actions:
            failed: Write | None = None
            if isinstance(action, _WRITES):
                try:
                    await self._write(action)
                except DriverError as exc:
                    failed = action
                    log.error("heartbeat_failed" if isinstance(action, Heartbeat)
                              else "action_failed", connector=self.id, action=repr(action),
                              error=str(exc))
            if not isinstance(action, _QUIET):
                if isinstance(action, FeedbackChanged):
                    self.stats.last_contactor_feedback = action.closed
                self._notify(action, now)
            self._log(action)
            if failed is not None:
                await self._apply(self.core.step(ActionFailed(failed), now).actions, now)

    async def _write(self, action: Write) -> None:
        if isinstance(action, Resend):
            action = action.action
        if isinstance(action, SetContactor):
            await self.relay.set_contactor(action.closed)
            self.stats.contactor_closes += action.closed
            self._relay_due = 0.0  # read the mirror contact on the next cycle
        elif isinstance(action, SetDuty):
            await self.pilot.set_duty(action.duty)
        elif isinstance(action, SetLock):
            await self.relay.set_lock(action.locked)
            self._relay_due = 0.0
        elif isinstance(action, ResetBoardFaults):
            await self.pilot.fault_reset()
        elif isinstance(action, Heartbeat):
            await self.pilot.heartbeat()

    def _notify(self, note: Output, now: float) -> None:
        if self.on_event is not None:
            try:
                self.on_event(self.id, note, now)
            except Exception:  # reporting must never break the control loop
                log.exception("event_sink_failed", connector=self.id, note=repr(note))

    def _log(self, action: Output) -> None:
        if isinstance(action, SetContactor):
            log.info("contactor_commanded", connector=self.id, closed=action.closed)
        else:
            log_pilot_note(log, self.id, action)
