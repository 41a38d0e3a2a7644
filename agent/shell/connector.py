"""One control task per connector: feeds the pure pilot machine and applies its actions.

The loop is deliberately simple, because its timing is what ``check-config`` promises:

    every pilot poll period:  read the pilot board (PILOT_POLL priority) -> step(PilotSampled)
                              apply the actions in order (contactor open first, SAFETY_WRITE)
    every relay poll period:  read the mirror contacts -> step(RelaySampled)
    whenever a deadline falls due: step(Tick)

The periods are ``poll_ms`` whenever anything can change that has a reaction limit, and the
slower ``idle_poll_ms`` only while nothing can (``agent.shell.pollrate``: README decisions,
"idle polls"): the first sample that differs, any command, fault or failed read
brings the fast poll back for the next cycle.

Meter reads and heartbeats run as separate tasks on their own periods, so a slow meter on its own
bus never delays the safety poll; on a shared bus the scheduler's priorities keep it behind.
Nothing here decides anything about charging: that is the machine's job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from agent.errors import DriverError
from agent.pilot import (
    Action,
    CpLevel,
    FaultCleared,
    FaultRaised,
    MeterReadFailed,
    MeterSampled,
    OfferChanged,
    PilotMachine,
    PilotReadFailed,
    PilotSampled,
    RelayReadFailed,
    RelaySampled,
    ResetBoardFaults,
    SessionEvent,
    SetContactor,
    SetDuty,
    SetLock,
    StateChanged,
    Step,
    Tick,
)
from agent.shell.handle import ConnectorStats, EventSink, HardwareInfo
from agent.shell.pollrate import pilot_idle, relay_idle
from drivers.board_maps import PilotStatus
from drivers.interfaces import Contactor, Meter, PilotBoard

log = structlog.get_logger("agent.connector")

DUTY_MISMATCH_POLLS = 20  # ~200 ms of a board outputting another duty than commanded
METER_FROZEN_READS = 10  # identical readings in a row while current flows: a frozen meter
FROZEN_MIN_CURRENT_A = 1.0
LOOP_LAG_WARN_S = 0.020  # a poll woken this late means something blocked the event loop

@dataclass(frozen=True, slots=True)
class EvLevelChanged:
    """The debounced EV level (CP state) changed; reported upstream as pilotStateChanged."""

    old: CpLevel | None
    new: CpLevel | None
    cp_mv: int


@dataclass(frozen=True, slots=True)
class FeedbackChanged:
    """The contactor's mirror contact changed (None: relay board unreadable)."""

    closed: bool | None


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


class ConnectorController:
    """Runs one connector: the machine, its three drivers, and the loop between them."""

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
        self.machine = machine
        self.pilot = pilot
        self.relay = relay
        self.meter = meter
        self.timing = timing
        self.stats = ConnectorStats()
        self.hardware = HardwareInfo()
        self.on_event = on_event
        self._ev_level: CpLevel | None = None
        self._clock = clock
        self._deadline: float | None = None
        self._relay_due = 0.0
        self._lock = asyncio.Lock()  # one step + its actions at a time
        # Safe-state writes that did not reach a board (port gone, board silent): re-sent as
        # soon as the board answers again, because the machine commands each change only once.
        self._open_pending = False
        self._duty_pending = False
        self._duty_mismatch = 0
        self._feedback_hold_until = 0.0
        self._pilot_ok = False  # the last pilot read answered
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
                await self._apply_one(action)
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

    async def feed(self, event: Any) -> Step:
        """Step the machine with an external event (limit, authorise, stop, reset)."""
        return await self._step(event)

    # --- the loops -------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._control_loop(), name=f"c{self.id}-control")
            tg.create_task(self._meter_loop(), name=f"c{self.id}-meter")
            tg.create_task(self._heartbeat_loop(), name=f"c{self.id}-heartbeat")

    async def _control_loop(self) -> None:
        next_at = self._clock()
        cycle_cpu = self.stats.cycle_cpu
        while True:
            cycle_cpu.mark()
            await self._poll_pilot()
            now = self._clock()
            if now >= self._relay_due:
                self._relay_due = due = now + self.timing.relay_poll_s
                await self._poll_relay()  # a switch it caused set _relay_due = 0: keep that
                if self._relay_due == due and relay_idle(
                        self.machine, read_ok=self._relay_ok, open_pending=self._open_pending):
                    self._relay_due = now + self.timing.relay_idle_poll_s
            if self._deadline is not None and self._clock() >= self._deadline:
                await self._step(Tick())
            self.stats.cycles += 1
            now = self.stats.last_cycle_at = self._clock()
            period = self.timing.pilot_poll_s
            idle = pilot_idle(self.machine, read_ok=self._pilot_ok,
                              write_pending=self._open_pending or self._duty_pending)
            if idle and (self._deadline is None
                         or self._deadline > now + self.timing.pilot_idle_poll_s):
                period = self.timing.pilot_idle_poll_s  # a deadline due sooner keeps it fast
            next_at += period
            delay = next_at - now
            if delay < -period:  # fell behind (bus stalled): do not burst to catch up
                next_at = now
                delay = 0.0
            await asyncio.sleep(max(delay, 0.0))
            if delay > 0:
                self._note_lag(self._clock() - next_at)

    def _note_lag(self, lag: float) -> None:
        """How late the poll timer fired: a blocking callback or a slow disk delays every
        control loop by this much (the poll's own wake-up measures it for free)."""
        if lag > self.stats.max_loop_lag_s:
            self.stats.max_loop_lag_s = lag
        if lag > LOOP_LAG_WARN_S:
            log.warning("event_loop_lag", connector=self.id, lag_ms=round(lag * 1000, 1))

    async def _poll_pilot(self) -> None:
        try:
            s = await self.pilot.read_sample()
        except DriverError as exc:
            self.stats.pilot_errors += 1
            self._pilot_ok = False
            log.debug("pilot_read_failed", connector=self.id, error=str(exc))
            await self._step(PilotReadFailed())
            return
        self._pilot_ok = True
        self.stats.last_cp_mv = s.cp_high_mv
        self._check_duty(s.duty_actual, s.status)
        if self._duty_pending:
            await self._reassert_duty()
        await self._step(
            PilotSampled(
                cp_high_mv=s.cp_high_mv,
                cp_low_mv=s.cp_low_mv,
                duty_actual=s.duty_actual,
                cc_ohm=s.cc_ohm,
                status=s.status,
                sample_seq=s.sample_seq,
                temperature_c=s.temperature_c,
            )
        )

    async def _poll_relay(self) -> None:
        try:
            inputs = await self.relay.read_inputs()
        except DriverError as exc:
            self.stats.relay_errors += 1
            self._relay_ok = False
            log.debug("relay_read_failed", connector=self.id, error=str(exc))
            await self._step(RelayReadFailed())
            return
        self._relay_ok = True
        if self._open_pending:
            await self._reassert_open()
        if self._clock() < self._feedback_hold_until:
            return  # the open only just reached the board: its contacts are still moving
        if inputs.contactor_closed != self.stats.last_contactor_feedback:
            self.stats.last_contactor_feedback = inputs.contactor_closed
            self._notify(FeedbackChanged(inputs.contactor_closed), self._clock())
        await self._step(RelaySampled(inputs.contactor_closed, inputs.lock_engaged))

    async def _meter_loop(self) -> None:
        frozen = 0
        while True:
            try:
                reading = await self.meter.read()
            except DriverError as exc:
                self.stats.meter_errors += 1
                log.debug("meter_read_failed", connector=self.id, error=str(exc))
                await self._step(MeterReadFailed())
            else:
                # A meter that answers with the very same values while current flows has
                # frozen (real readings jitter): it counts as lost, or it would blind the
                # overcurrent check and the energy record.
                drawing = max(reading.current_a, default=0.0) > FROZEN_MIN_CURRENT_A
                frozen = frozen + 1 if drawing and reading == self.stats.last_meter else 0
                self.stats.last_meter = reading
                if frozen >= METER_FROZEN_READS:
                    if frozen == METER_FROZEN_READS:
                        log.error("meter_frozen", connector=self.id, reads=frozen)
                    await self._step(MeterReadFailed())
                else:
                    await self._step(MeterSampled(reading.current_a))
            await asyncio.sleep(self.timing.meter_poll_s)

    async def _heartbeat_loop(self) -> None:
        while True:
            if self._duty_pending:
                await self._reassert_duty()
            try:
                if not self._duty_pending:  # a stale PWM duty is on the board: let its
                    await self.pilot.heartbeat()  # watchdog keep the line at +12 V
            except DriverError as exc:
                log.warning("heartbeat_failed", connector=self.id, error=str(exc))
            await asyncio.sleep(self.timing.heartbeat_s)

    # --- safe-state writes that failed ------------------------------------------------------

    async def _reassert_open(self) -> None:
        """The relay board answers again: send the open it missed (only ever an open)."""
        async with self._lock:
            if not self._open_pending or self.machine.contactor_commanded:
                self._open_pending = False
                return
            try:
                await self.relay.set_contactor(False)
            except DriverError as exc:
                log.error("contactor_open_resend_failed", connector=self.id, error=str(exc))
                return
            self._open_pending = False
            # the machine times its welded check from its own (undelivered) open: give the
            # contacts the feedback timeout from the open that did arrive before judging them
            self._feedback_hold_until = self._clock() + self.timing.contactor_feedback_timeout_s
            self._relay_due = 0.0
            log.warning("contactor_open_resent", connector=self.id)

    def _check_duty(self, duty_actual: int, status: int) -> None:
        """The board outputs another duty than commanded for a while (a write it applied late,
        a reset): write it again. Not while its watchdog holds +12 V (FAILSAFE): the heartbeat
        is what clears that."""
        if duty_actual == self.machine.duty_commanded or status & PilotStatus.FAILSAFE:
            self._duty_mismatch = 0
            return
        self._duty_mismatch += 1
        if self._duty_mismatch >= DUTY_MISMATCH_POLLS:
            self._duty_mismatch = 0
            self._duty_pending = True
            log.warning("duty_mismatch", connector=self.id, actual=duty_actual,
                        commanded=self.machine.duty_commanded)

    async def _reassert_duty(self) -> None:
        """The pilot board answers again: write the duty the machine commands now."""
        async with self._lock:
            duty = self.machine.duty_commanded
            try:
                await self.pilot.set_duty(duty)
            except DriverError as exc:
                log.error("duty_resend_failed", connector=self.id, error=str(exc))
                return
            self._duty_pending = False
            log.warning("duty_resent", connector=self.id, duty_permille=duty)

    # --- stepping and applying -------------------------------------------------------------

    async def _step(self, event: Any) -> Step:
        async with self._lock:
            now = self._clock()
            step = self.machine.step(event, now)
            self._deadline = step.next_deadline
            for action in step.actions:
                await self._apply(action, now)
            level = self.machine.ev_level  # None while the debouncer restarts after a gap
            if level is not None and level != self._ev_level:
                old, self._ev_level = self._ev_level, level
                self._notify(EvLevelChanged(old, level, self.stats.last_cp_mv or 0), now)
            return step

    def _notify(self, note: Any, now: float) -> None:
        if self.on_event is not None:
            try:
                self.on_event(self.id, note, now)
            except Exception:  # reporting must never break the control loop
                log.exception("event_sink_failed", connector=self.id, note=repr(note))

    async def _apply(self, action: Action, now: float) -> None:
        try:
            await self._apply_one(action)
        except DriverError as exc:
            # The machine learns of a dead board from the next failed poll. It commands each
            # change once, so a failed open is retried here and re-sent when the relay board
            # answers again; a failed duty is re-sent when the pilot board answers again.
            log.error("action_failed", connector=self.id, action=repr(action), error=str(exc))
            if isinstance(action, SetContactor) and not action.closed:
                await self._retry_open()
            elif isinstance(action, SetDuty):
                self._duty_pending = True
        if not isinstance(action, SetDuty | SetLock | ResetBoardFaults):
            self._notify(action, now)
        self._log_action(action)

    async def _retry_open(self) -> None:
        for _ in range(3):
            try:
                await self.relay.set_contactor(False)
                return
            except DriverError as exc:
                log.error("contactor_open_retry_failed", connector=self.id, error=str(exc))
        self._open_pending = True

    async def _apply_one(self, action: Action) -> None:
        if isinstance(action, SetContactor):
            await self.relay.set_contactor(action.closed)
            self._open_pending = False
            self.stats.contactor_closes += action.closed
            self._relay_due = 0.0  # read the mirror contact on the next cycle
        elif isinstance(action, SetDuty):
            await self.pilot.set_duty(action.duty)
            self._duty_pending = False
        elif isinstance(action, SetLock):
            await self.relay.set_lock(action.locked)
            self._relay_due = 0.0
        elif isinstance(action, ResetBoardFaults):
            await self.pilot.fault_reset()

    def _log_action(self, action: Action) -> None:
        if isinstance(action, SetContactor):
            log.info("contactor_commanded", connector=self.id, closed=action.closed)
        elif isinstance(action, SetDuty):
            log.info("pilot_duty_commanded", connector=self.id, duty_permille=action.duty)
        elif isinstance(action, SetLock):
            log.info("lock_commanded", connector=self.id, locked=action.locked)
        elif isinstance(action, StateChanged):
            log.info("pilot_state_changed", connector=self.id, old=action.old.name,
                     new=action.new.name, cp_mv=action.cp_mv)
        elif isinstance(action, FaultRaised):
            log.error("fault_raised", connector=self.id, code=str(action.code),
                      detail=action.detail)
        elif isinstance(action, FaultCleared):
            log.info("fault_cleared", connector=self.id, code=str(action.code))
        elif isinstance(action, OfferChanged):
            log.info("offer_changed", connector=self.id, offered_a=action.offered_a)
        elif isinstance(action, SessionEvent):
            log.info("session_event", connector=self.id, kind=action.kind, reason=action.reason)
