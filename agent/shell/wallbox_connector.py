"""One control task per retrofitted wallbox: polls its state, feeds the pure wallbox machine and
writes the current it decides, keeps the wallbox's own fail-safe programmed.

    every poll period:   read the state register -> step(WallboxSampled) (any transaction
                         also feeds the wallbox's communication watchdog)
    every verify period: read back what was programmed; values back at their defaults mean
                         the wallbox has reset: program setup, watchdog, fail-safe, current again
    every second:        energy and currents (its own registers, or a meter on the bus)

The orderly layer sees the same notes as from a pilot-board connector (``EvLevelChanged``,
``StateChanged``, ``SessionEvent``, ``OfferChanged``, faults), so nothing above this knows which
hardware is underneath (``agent.shell.handle``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from agent.errors import DriverError
from agent.faults import FaultCode
from agent.pilot import (
    CpLevel,
    FaultCleared,
    FaultRaised,
    OfferChanged,
    SessionEvent,
    SetContactor,
    StateChanged,
)
from agent.pilot.delivery import EvLevelChanged
from agent.shell.handle import ConnectorStats, EventSink, HardwareInfo
from agent.wallbox.machine import (
    WallboxAction,
    WallboxMachine,
    WallboxReadFailed,
    WallboxSampled,
    WallboxStep,
    WriteCommand,
)
from agent.wallbox.mapping import command_amps
from drivers.interfaces import Meter, Wallbox
from drivers.wallbox.profiles import WallboxCommand

log = structlog.get_logger("agent.wallbox")

# The nominal CP plateau of each letter the wallbox reports (the wallbox measures the real one;
# pilotStateChanged carries this nominal value for a retrofitted connector).
NOMINAL_CP_MV = {CpLevel.STATE_1: 12000, CpLevel.STATE_2: 9000, CpLevel.STATE_3: 6000,
                 CpLevel.STATE_D: 3000, CpLevel.INVALID: 0, CpLevel.NEGATIVE: -12000}


@dataclass
class WallboxTiming:
    poll_s: float = 0.5
    verify_s: float = 5.0
    energy_s: float = 1.0


class WallboxConnector:
    """A ``ConnectorHandle`` for a wallbox of any profile."""

    def __init__(
        self,
        connector_id: int,
        machine: WallboxMachine,
        driver: Wallbox,
        meter: Meter | None,
        timing: WallboxTiming,
        hardware: HardwareInfo,
        *,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = connector_id
        self.machine = machine
        self.driver = driver
        self.meter = meter
        self.timing = timing
        self.hardware = hardware
        self.on_event = on_event
        self.stats = ConnectorStats()
        self.reprogrammed = 0
        self._clock = clock
        self._lock = asyncio.Lock()
        self._ev_level: CpLevel | None = None
        self._deadline: float | None = None
        self._write_pending = False
        self._reprogram_pending = False
        self._first: list[Any] = []  # fed before the first poll (see ``feed_first``)

    # --- start-up and shut-down ------------------------------------------------------------

    async def drive_safe_state(self) -> None:
        """Paused through the disable path: at start-up until the composite arrives, and on exit
        (a stopped agent does not leave a wallbox charging at a limit it no longer enforces)."""
        await self.driver.apply(self.machine.safe_state_command(), force=True)

    async def configure_board(self) -> None:
        """Setup writes (Heidelberg: standby off), the watchdog and the fail-safe current."""
        await self.driver.program()
        log.info("wallbox_programmed", connector=self.id, profile=self.driver.profile.name,
                 watchdog_s=self.driver.watchdog_s, failsafe_a=self.driver.failsafe_a,
                 programmed=dict(self.driver.programmed))

    def feed_first(self, event: Any) -> None:
        """Queue an input for the start of ``run``, before the first poll."""
        self._first.append(event)

    async def feed(self, event: Any) -> WallboxStep:
        await self._feed_queued()  # a feed that comes before run() must not overtake them
        return await self._step(event)

    async def _feed_queued(self) -> None:
        first, self._first = self._first, []
        for event in first:
            await self._step(event)

    # --- the loops -------------------------------------------------------------------------

    async def run(self) -> None:
        await self._feed_queued()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._control_loop(), name=f"c{self.id}-wallbox")
            tg.create_task(self._energy_loop(), name=f"c{self.id}-energy")
            tg.create_task(self._verify_loop(), name=f"c{self.id}-verify")

    async def _control_loop(self) -> None:
        period = self.timing.poll_s
        next_at = self._clock()
        while True:
            await self._poll()
            if self._deadline is not None and self._clock() >= self._deadline:
                await self._step(WallboxReadFailed())  # time passed without an answer
            self.stats.cycles += 1
            self.stats.last_cycle_at = self._clock()
            next_at += period
            delay = next_at - self._clock()
            if delay < -period:
                next_at, delay = self._clock(), 0.0
            await asyncio.sleep(max(delay, 0.0))

    async def _poll(self) -> None:
        try:
            value = await self.driver.read_state()
        except DriverError as exc:
            self.stats.pilot_errors += 1
            log.debug("wallbox_read_failed", connector=self.id, error=str(exc))
            await self._step(WallboxReadFailed())
            return
        await self._step(WallboxSampled(value))
        if self._reprogram_pending:
            await self._reprogram("answers again after a loss")
        elif self._write_pending:
            await self._resend()

    async def _energy_loop(self) -> None:
        while True:
            try:
                reading = (await self.meter.read() if self.meter is not None
                           else await self.driver.read_meter())
            except DriverError as exc:
                self.stats.meter_errors += 1
                log.debug("wallbox_energy_read_failed", connector=self.id, error=str(exc))
            else:
                self.stats.last_meter = reading
            await asyncio.sleep(self.timing.energy_s)

    async def _verify_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timing.verify_s)
            try:
                changed = await self.driver.verify()
            except DriverError as exc:
                log.debug("wallbox_verify_failed", connector=self.id, error=str(exc))
                continue
            if changed:
                await self._reprogram(f"registers back at other values: {', '.join(changed)}")

    async def _reprogram(self, why: str) -> None:
        """The wallbox reset (or may have): setup, watchdog, fail-safe and current again."""
        async with self._lock:
            try:
                await self.driver.program()
                await self.driver.apply(self.machine.command, force=True)
            except DriverError as exc:
                self._reprogram_pending = True
                log.error("wallbox_reprogram_failed", connector=self.id, error=str(exc))
                return
            self._reprogram_pending = self._write_pending = False
            self.reprogrammed += 1
            log.warning("wallbox_reprogrammed", connector=self.id, why=why,
                        programmed=dict(self.driver.programmed))

    async def _resend(self) -> None:
        async with self._lock:
            try:
                await self.driver.apply(self.machine.command, force=True)
            except DriverError as exc:
                log.error("wallbox_write_resend_failed", connector=self.id, error=str(exc))
                return
            self._write_pending = False
            log.warning("wallbox_write_resent", connector=self.id)

    # --- stepping and applying -------------------------------------------------------------

    async def _step(self, event: Any) -> WallboxStep:
        async with self._lock:
            now = self._clock()
            step = self.machine.step(event, now)
            self._deadline = step.next_deadline
            for action in step.actions:
                await self._apply(action, now)
            if self.driver.command != self.machine.command and not self._write_pending:
                # a step taken outside this task (a service's first limit) changed the command
                await self._write(self.machine.command)
            level = self.machine.ev_level
            if level is not None and level != self._ev_level:
                old, self._ev_level = self._ev_level, level
                # the nominal plateau goes upstream; status shows no CP (the agent cannot see it)
                self._notify(EvLevelChanged(old, level, NOMINAL_CP_MV.get(level, 0)), now)
            return step

    async def _apply(self, action: WallboxAction, now: float) -> None:
        if isinstance(action, WriteCommand):
            await self._write(action.command)
            return
        if isinstance(action, FaultCleared) and action.code is FaultCode.WALLBOX_LOST:
            self._reprogram_pending = True  # it may have reset while we could not see it
        self._notify(action, now)
        self._log(action)

    async def _write(self, cmd: WallboxCommand) -> None:
        try:
            await self.driver.apply(cmd)
            self._write_pending = False
        except DriverError as exc:
            # re-sent when the wallbox answers again; its watchdog covers the meantime
            self._write_pending = True
            log.error("action_failed", connector=self.id, action=repr(cmd), error=str(exc))
        log.info("wallbox_current_commanded", connector=self.id, raw=cmd.raw,
                 enabled=cmd.enabled, current_a=command_amps(self.driver.profile, cmd))

    def _notify(self, note: Any, now: float) -> None:
        if self.on_event is not None:
            try:
                self.on_event(self.id, note, now)
            except Exception:  # reporting must never break the control loop
                log.exception("event_sink_failed", connector=self.id, note=repr(note))

    def _log(self, action: WallboxAction) -> None:
        if isinstance(action, SetContactor):
            log.info("contactor_commanded", connector=self.id, closed=action.closed,
                     by="wallbox")
        elif isinstance(action, StateChanged):
            log.info("pilot_state_changed", connector=self.id, old=action.old.name,
                     new=action.new.name, wallbox_value=self.machine.last_value)
        elif isinstance(action, FaultRaised):
            log.error("fault_raised", connector=self.id, code=str(action.code),
                      detail=action.detail)
        elif isinstance(action, FaultCleared):
            log.info("fault_cleared", connector=self.id, code=str(action.code))
        elif isinstance(action, OfferChanged):
            log.info("offer_changed", connector=self.id, offered_a=action.offered_a)
        elif isinstance(action, SessionEvent):
            log.info("session_event", connector=self.id, kind=action.kind, reason=action.reason)
