"""One control task per retrofitted wallbox: an I/O pump around the pure wallbox core.

    every poll period:   read the state register -> step(WallboxSampled) (any transaction
                         also feeds the wallbox's communication watchdog)
    every verify period: read back what was programmed -> step(WallboxVerified)
    every second:        energy and currents (its own registers, or a meter on the bus)

The core (``agent.wallbox.delivery`` around ``agent.wallbox.machine``) decides everything:
the command, when to re-send it, when to program the wallbox again. This task applies its
actions in order and reports a write that failed back to it (``WallboxWriteFailed``),
applying the answer at once.

The orderly layer sees the same notes as from a pilot-board connector (``EvLevelChanged``,
``StateChanged``, ``SessionEvent``, ``OfferChanged``, faults), so nothing above this knows which
hardware is underneath (``agent.shell.handle``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from agent.errors import DriverError
from agent.pilot import (
    SetContactor,
    StateChanged,
)
from agent.shell.handle import ConnectorStats, EventSink, HardwareInfo
from agent.shell.notelog import log_session_note
from agent.wallbox.delivery import (
    Reprogram,
    WallboxDelivered,
    WallboxDelivery,
    WallboxInput,
    WallboxOutput,
    WallboxVerified,
    WallboxWrite,
    WallboxWriteFailed,
)
from agent.wallbox.machine import (
    WallboxMachine,
    WallboxReadFailed,
    WallboxSampled,
    WriteCommand,
)
from agent.wallbox.mapping import command_amps
from drivers.interfaces import Meter, Wallbox
from drivers.wallbox.profiles import WallboxCommand

log = structlog.get_logger("agent.wallbox")


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
        self.core = WallboxDelivery(machine)
        self.driver = driver
        self.meter = meter
        self.timing = timing
        self.hardware = hardware
        self.on_event = on_event
        self.stats = ConnectorStats()
        self.reprogrammed = 0
        self._clock = clock
        self._lock = asyncio.Lock()
        self._deadline: float | None = None
        self._first: list[WallboxInput] = []  # fed before the first poll (see ``feed_first``)

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

    def feed_first(self, event: WallboxInput) -> None:
        """Queue an input for the start of ``run``, before the first poll."""
        self._first.append(event)

    async def feed(self, event: WallboxInput) -> WallboxDelivered:
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
            await self._step(WallboxVerified(tuple(changed)))

    # --- stepping and applying -------------------------------------------------------------

    async def _step(self, event: WallboxInput) -> WallboxDelivered:
        async with self._lock:
            now = self._clock()
            out = self.core.step(event, now)
            self._deadline = out.next_deadline
            await self._apply(out.actions, now)
            return out

    async def _apply(self, actions: tuple[WallboxOutput, ...], now: float) -> None:
        """Apply in order; a failed write goes back to the core, whose answer (a re-send, or
        nothing) is applied at once, before the rest (it is bounded by the core's rules)."""
        for action in actions:
            if isinstance(action, WriteCommand | Reprogram):
                if not await self._write(action):
                    failed = self.core.step(WallboxWriteFailed(action), now)
                    await self._apply(failed.actions, now)
                continue
            self._notify(action, now)
            self._log(action)

    async def _write(self, action: WallboxWrite) -> bool:
        """Carry out one write; False when it failed (logged here, decided by the core)."""
        cmd = action.command
        try:
            if isinstance(action, Reprogram):  # the wallbox reset (or may have)
                await self.driver.program()
            await self.driver.apply(cmd, force=isinstance(action, Reprogram) or action.force)
        except DriverError as exc:
            if isinstance(action, Reprogram):
                log.error("wallbox_reprogram_failed", connector=self.id, error=str(exc))
                return False
            log.error("wallbox_write_resend_failed" if action.force else "action_failed",
                      connector=self.id, action=repr(cmd), error=str(exc))
            if not action.force:
                self._log_commanded(cmd)
            return False
        if isinstance(action, Reprogram):
            self.reprogrammed += 1
            log.warning("wallbox_reprogrammed", connector=self.id, why=action.reason,
                        programmed=dict(self.driver.programmed))
        elif action.force:
            log.warning("wallbox_write_resent", connector=self.id)
        else:
            self._log_commanded(cmd)
        return True

    def _log_commanded(self, cmd: WallboxCommand) -> None:
        log.info("wallbox_current_commanded", connector=self.id, raw=cmd.raw,
                 enabled=cmd.enabled, current_a=command_amps(self.driver.profile, cmd))

    def _notify(self, note: WallboxOutput, now: float) -> None:
        if self.on_event is not None:
            try:
                self.on_event(self.id, note, now)
            except Exception:  # reporting must never break the control loop
                log.exception("event_sink_failed", connector=self.id, note=repr(note))

    def _log(self, action: WallboxOutput) -> None:
        if isinstance(action, SetContactor):
            log.info("contactor_commanded", connector=self.id, closed=action.closed,
                     by="wallbox")
        elif isinstance(action, StateChanged):
            log.info("pilot_state_changed", connector=self.id, old=action.old.name,
                     new=action.new.name, wallbox_value=self.machine.last_value)
        else:
            log_session_note(log, self.id, action)
