"""One simulated RS-485 line: a pymodbus ``ModbusSerialServer`` serving several devices on a pty.

Every HIL simulator (meter, pilot board, relay board) describes its memory as a pymodbus
``SimDevice`` and shares one ``SimulatedBus`` per port, like real devices share a line. Absent
unit ids stay silent (``hil.patches.patch_ignore_missing_devices`` is applied).

API (keep it small; the pilot-board and relay-board simulators build on it)::

    bus = SimulatedBus([meter_dev, relay_dev], port=bridge.path_b,
                       line=LineSettings(9600, "N", 1))
    await bus.start()                                   # builds the server in the running loop
    await bus.set_values(unit, fc, address, values)     # simulation updates its own memory
    values = await bus.get_values(unit, fc, address, count)
    bus.on_write(unit, callback)        # callback(unit, fc, address, values) after an agent
                                        # write (FC 05/06/0F/10) was stored; sync or async
    bus.on_access(unit, hook)           # hook(unit, fc, address, count, values) before every
                                        # agent request; may return an exception code (int)
    bus.set_latency(unit, seconds)      # answer this much later (device processing time)
    bus.set_silent(unit, True)          # no answer at all (a dead or unplugged device)
    bus.hold(unit) / bus.release(unit)  # answers wait until released (a test orders the line)
    bus.set_exception(unit, 4)          # answer every request with this exception code
    bus.accesses                        # [(unit, fc, address, count)] of every request decoded
                                        # from the line, in arrival order (absent units too)
    await bus.stop()

``fc`` in ``set_values``/``get_values`` picks the table: 1/5/15 coils, 2 discrete inputs,
3/6/16 holding registers, 4 input registers (a device built with one shared list serves all
four from the same memory). ``set_values`` does not run hooks, latency or faults; only
requests that arrive over the line do. A ``SimDevice``'s own ``action`` keeps working: it runs
after the injected latency/faults, so a simulator can still refuse a value with exception 03.
Wire timing is the pty bridge's job (``hil.ptybridge``); this server adds device latency only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import SimDevice
from pymodbus.simulator.simdevice import SimAction

from hil.patches import patch_ignore_missing_devices
from hil.ptybridge import LineSettings

Values = list[int] | list[bool]
OnWrite = Callable[[int, int, int, Values], Awaitable[None] | None]
OnAccess = Callable[[int, int, int, int, Values | None], Awaitable[int | None] | int | None]

WRITE_FUNCTIONS = frozenset({5, 6, 15, 16, 22, 23})
_internal = contextvars.ContextVar("modbus_server_internal", default=False)
_log = logging.getLogger(__name__)


@dataclass(slots=True)
class _DeviceState:
    latency_s: float = 0.0
    silent: bool = False
    exception_code: int | None = None
    gate: asyncio.Event | None = None
    on_write: list[OnWrite] = dataclasses.field(default_factory=list)
    on_access: list[OnAccess] = dataclasses.field(default_factory=list)


class SimulatedBus:
    """Several ``SimDevice`` on one pty, with write callbacks and fault injection per unit."""

    def __init__(
        self, devices: list[SimDevice], port: str, line: LineSettings | None = None
    ) -> None:
        self.port = port
        self.line = line or LineSettings()
        self._devices = list(devices)
        self._state = {d.id: _DeviceState() for d in self._devices}
        self._server: ModbusSerialServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.accesses: list[tuple[int, int, int, int]] = []

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> SimulatedBus:
        patch_ignore_missing_devices()
        wrapped = [dataclasses.replace(d, action=self._action_for(d)) for d in self._devices]
        self._server = ModbusSerialServer(
            wrapped,
            framer=FramerType.RTU,
            port=self.port,
            baudrate=self.line.baud,
            parity=self.line.parity,
            stopbits=self.line.stopbits,
            ignore_missing_devices=True,
            trace_pdu=self._trace_pdu,
        )
        await self._server.serve_forever(background=True)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def __aenter__(self) -> SimulatedBus:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- memory ----------------------------------------------------------------------------

    async def set_values(self, unit: int, fc: int, address: int, values: Values) -> None:
        """Write the device's own memory (no hooks, no latency)."""
        server = self._require()
        token = _internal.set(True)
        try:
            await server.async_setValues(unit, fc, address, values)
        finally:
            _internal.reset(token)

    async def get_values(self, unit: int, fc: int, address: int, count: int = 1) -> Values:
        server = self._require()
        token = _internal.set(True)
        try:
            return await server.async_getValues(unit, fc, address, count)
        finally:
            _internal.reset(token)

    # --- hooks and faults ------------------------------------------------------------------

    def on_write(self, unit: int, callback: OnWrite) -> None:
        self._state[unit].on_write.append(callback)

    def on_access(self, unit: int, hook: OnAccess) -> None:
        self._state[unit].on_access.append(hook)

    def set_latency(self, unit: int, seconds: float) -> None:
        self._state[unit].latency_s = max(0.0, seconds)

    def set_silent(self, unit: int, silent: bool = True) -> None:
        self._state[unit].silent = silent

    def set_exception(self, unit: int, code: int | None) -> None:
        self._state[unit].exception_code = code

    def hold(self, unit: int) -> None:
        """Answers of ``unit`` wait for ``release``: a test queues work behind a request that is
        on the wire for as long as it needs, where a latency would race the test's own steps."""
        self._state[unit].gate = asyncio.Event()

    def release(self, unit: int) -> None:
        gate, self._state[unit].gate = self._state[unit].gate, None
        if gate is not None:
            gate.set()

    # --- internals -------------------------------------------------------------------------

    def _require(self) -> ModbusSerialServer:
        if self._server is None:
            raise RuntimeError("SimulatedBus not started")
        return self._server

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:  # every request decoded from the line, valid address or not
            count = pdu.count or len(pdu.bits) or len(pdu.registers)
            self.accesses.append((pdu.dev_id, pdu.function_code, pdu.address, count))
        return pdu

    def _action_for(self, device: SimDevice) -> SimAction:
        unit = device.id
        original = device.action
        state = self._state[unit]

        async def action(
            fc: int,
            start: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: Values | None,
        ) -> ExcCodes | None:
            if _internal.get():
                return None
            is_write = fc in WRITE_FUNCTIONS
            # pymodbus reads a written register back after storing it; that is not a request
            is_request = set_values is not None if is_write else True
            if is_request:
                if state.silent:
                    raise NoSuchIdException(f"unit {unit} silenced")  # server stays silent
                if state.gate is not None:
                    await state.gate.wait()
                if state.latency_s:
                    await asyncio.sleep(state.latency_s)
                if state.exception_code is not None:
                    return ExcCodes(state.exception_code)
                for hook in state.on_access:
                    code = hook(unit, fc, address, count, set_values)
                    if inspect.isawaitable(code):
                        code = await code
                    if code:
                        return ExcCodes(int(code))
            if original is not None and (code := await original(
                fc, start, address, count, registers, set_values
            )):
                return code
            if is_write and set_values is not None and state.on_write:
                # runs after pymodbus stored the values (no await between action and store)
                self._spawn(unit, fc, address, list(set_values))
            return None

        return action

    def _spawn(self, unit: int, fc: int, address: int, values: Values) -> None:
        async def run() -> None:
            for callback in self._state[unit].on_write:
                try:
                    result = callback(unit, fc, address, values)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    _log.exception("on_write callback of unit %s failed", unit)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
