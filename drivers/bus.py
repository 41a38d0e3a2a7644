"""One owner per bus: a single asyncio task runs every Modbus transaction of one port.

RS-485 is half duplex and Modbus RTU has no transaction id, so several tasks sharing a client
would interleave, and a late answer could be taken for the next question. ``BusScheduler`` owns
the pymodbus client of one port (``AsyncModbusSerialClient`` with the RTU framer, or
``AsyncModbusTcpClient`` for ``tcp://host:port``), built inside the running loop, and runs one
transaction at a time, lowest ``Priority`` first, FIFO within a priority. It never splits a
transaction: callers (the meter driver) split long reads into short blocks so that no
transaction holds the bus for long (``drivers.linetime`` turns this into a reaction bound).

pymodbus is told not to retry (``retries=0``) and not to reconnect (``reconnect_delay=0``):
the scheduler decides both. Foreign exceptions become ``DriverTimeoutError``,
``DriverIOError`` or ``ModbusExceptionError`` naming the bus and the unit.

Stale answers (stack.md section 2): after a timeout, the RTU client in pymodbus 3.16.1 accepts
a late reply to the previous request as the answer to the next one if device id and function
code match; count and address are not checked. The scheduler therefore

1. validates every answer: device id, function code, register/bit count (reads), address and
   value or count echo (writes); an answer that does not fit is rejected (``DriverIOError``,
   counted as ``garbled``), never returned;
2. after a timeout or a rejected answer, holds the bus for the drain window: the device's
   worst-case latency + the line time of the longest RTU frame (256 bytes) + t3.5, extended
   until the line has been quiet for a few character times. Bytes arriving then find no
   pending request and pymodbus drops them ("received pdu without a corresponding request"),
   and ``TransactionManager.execute`` clears the receive buffer before the next send, so no
   private pymodbus state is touched. Closing and reopening the port was rejected: heavy, and
   it races the reconnect logic.

So a late answer is never returned for another request, as long as the configured
``device_latency_s`` covers the device; if it does not, check (1) still rejects the answer
unless it happens to have the same unit, function and count (then it is indistinguishable on
RTU by construction: configure a timeout above the device's latency).

CRC errors: the pymodbus framer drops a frame with a bad CRC silently, so the client sees a
timeout. The scheduler watches received bytes (``trace_packet``): a timeout after bytes were
received counts as ``garbled`` and raises ``DriverIOError``; silence raises
``DriverTimeoutError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from agent.errors import DriverIOError, DriverTimeoutError, ModbusExceptionError
from drivers.linetime import (
    TCP_DEFAULT_TRANSACTION_S,
    LineTiming,
    TcpTiming,
    read_bytes,
    write_coils_bytes,
    write_registers_bytes,
    write_single_bytes,
)


class Priority(IntEnum):
    """Lower runs first. Contactor open beats everything; meters wait."""

    SAFETY_WRITE = 0  # contactor open
    PILOT_POLL = 1
    CONTROL_WRITE = 2  # duty, heartbeat, lock, contactor close, relay feedback reads
    METER_READ = 3


READ_FUNCTIONS = (1, 2, 3, 4)
_MAX_COUNT = {1: 2000, 2: 2000, 3: 125, 4: 125, 15: 1968, 16: 123}


@dataclass(slots=True)
class BusStats:
    """Counters of one bus since start; ``busy_s`` includes drain windows."""

    transactions: int = 0
    ok: int = 0
    timeouts: int = 0
    garbled: int = 0  # CRC errors, short frames, answers that do not fit the request
    io_errors: int = 0  # port missing or lost
    exceptions: int = 0  # Modbus exception responses
    retries: int = 0
    reconnects: int = 0
    busy_s: float = 0.0
    queue_wait_max_s: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Job:
    unit: int
    function: int
    address: int
    count: int
    values: tuple[int, ...]  # written values (bits as 0/1)
    priority: Priority
    retries: int
    future: asyncio.Future[list[int]]
    submitted: float


def _response_bytes(job: _Job) -> int:
    """Length of the answer a job expects (a late answer to it is at most this long)."""
    if job.function in (1, 2, 3, 4):
        return read_bytes(job.function, job.count)[1]
    if job.function == 15:
        return write_coils_bytes(job.count)[1]
    if job.function == 16:
        return write_registers_bytes(job.count)[1]
    return write_single_bytes()[1]


class BusScheduler:
    """The only user of one port. ``async with BusScheduler(...) as bus: await bus.read(...)``.

    ``port`` is a serial device path or ``tcp://host:port``. ``device_latency_s`` is the
    worst-case time a device on this bus takes to start answering (per unit overrides in
    ``unit_latency_s``); it sizes the drain window after a timeout.
    """

    def __init__(
        self,
        name: str,
        port: str,
        *,
        baud: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        timeout_s: float = 0.3,
        device_latency_s: float = 0.05,
        unit_latency_s: dict[int, float] | None = None,
        reconnect_interval_s: float = 0.5,
        tcp_transaction_s: float = TCP_DEFAULT_TRANSACTION_S,
    ) -> None:
        self.name = name
        self.port = port
        self.timeout_s = timeout_s
        self.device_latency_s = device_latency_s
        self.unit_latency_s = dict(unit_latency_s or {})
        self.reconnect_interval_s = reconnect_interval_s
        self.is_tcp = port.startswith("tcp://")
        self.timing: LineTiming | TcpTiming = (
            TcpTiming(tcp_transaction_s) if self.is_tcp else LineTiming(baud, parity, stopbits)
        )
        self.stats = BusStats()
        self._queue: asyncio.PriorityQueue[tuple[int, int, _Job]] | None = None
        self._seq = itertools.count()
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_rx = 0.0
        self._rx_buffer = b""  # the receive buffer pymodbus decoded the last answer from
        self._last_activity = 0.0
        self._last_connect_try = -1e9
        self._was_connected = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> BusScheduler:
        """Build the client in the running loop, try to connect, start the owner task."""
        if self._task is not None:
            return self
        self._queue = asyncio.PriorityQueue()
        self._client = self._make_client()
        await self._try_connect()
        self._task = asyncio.create_task(self._run(), name=f"bus-{self.name}")
        return self

    async def stop(self) -> None:
        """Stop the owner task, fail queued jobs, close the port."""
        task, self._task = self._task, None
        if task is not None:
            # Python 3.11's wait_for (used inside pymodbus connect) can swallow a cancel that
            # races a finished inner call, so cancel until the task is really gone.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue is not None:
            while not self._queue.empty():
                _, _, job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(self._io("bus stopped", job.unit))
        if self._client is not None:
            self._client.close()
            self._client = None

    async def __aenter__(self) -> BusScheduler:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def queued(self) -> int:
        """Transactions waiting (not counting the one on the wire)."""
        return 0 if self._queue is None else self._queue.qsize()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    def latency_of(self, unit: int) -> float:
        return self.unit_latency_s.get(unit, self.device_latency_s)

    # --- caller API ------------------------------------------------------------------------

    async def read(
        self,
        unit: int,
        function: int,
        address: int,
        count: int,
        *,
        priority: Priority = Priority.METER_READ,
        retries: int = 0,
    ) -> list[int]:
        """Read ``count`` registers (FC 03/04) or bits (FC 01/02, as 0/1)."""
        if function not in READ_FUNCTIONS:
            raise ValueError(f"not a read function code: {function}")
        return await self._submit(unit, function, address, count, (), priority, retries)

    async def read_bits(
        self,
        unit: int,
        function: int,
        address: int,
        count: int,
        *,
        priority: Priority = Priority.CONTROL_WRITE,
        retries: int = 0,
    ) -> list[bool]:
        """FC 01 (coils) or FC 02 (discrete inputs)."""
        if function not in (1, 2):
            raise ValueError(f"not a bit read function code: {function}")
        raw = await self._submit(unit, function, address, count, (), priority, retries)
        return [bool(v) for v in raw]

    async def write_register(
        self,
        unit: int,
        address: int,
        value: int,
        *,
        priority: Priority = Priority.CONTROL_WRITE,
        retries: int = 0,
    ) -> None:
        """FC 06."""
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"register value {value} out of 0..65535")
        await self._submit(unit, 6, address, 1, (value,), priority, retries)

    async def write_registers(
        self,
        unit: int,
        address: int,
        values: Sequence[int],
        *,
        priority: Priority = Priority.CONTROL_WRITE,
        retries: int = 0,
    ) -> None:
        """FC 10 (16)."""
        if any(not 0 <= v <= 0xFFFF for v in values):
            raise ValueError("register values must be 0..65535")
        await self._submit(unit, 16, address, len(values), tuple(values), priority, retries)

    async def write_coil(
        self,
        unit: int,
        address: int,
        value: bool,
        *,
        priority: Priority = Priority.CONTROL_WRITE,
        retries: int = 0,
    ) -> None:
        """FC 05 (0xFF00 on, 0x0000 off)."""
        await self._submit(unit, 5, address, 1, (int(value),), priority, retries)

    async def write_coils(
        self,
        unit: int,
        address: int,
        values: Sequence[bool],
        *,
        priority: Priority = Priority.CONTROL_WRITE,
        retries: int = 0,
    ) -> None:
        """FC 0F (15)."""
        bits = tuple(int(bool(v)) for v in values)
        await self._submit(unit, 15, address, len(bits), bits, priority, retries)

    async def _submit(
        self,
        unit: int,
        function: int,
        address: int,
        count: int,
        values: tuple[int, ...],
        priority: Priority,
        retries: int,
    ) -> list[int]:
        if not 1 <= unit <= 247:
            raise ValueError(f"unit {unit} out of 1..247")
        if not 0 <= address <= 0xFFFF:
            raise ValueError(f"address {address} out of 0..65535")
        limit = _MAX_COUNT.get(function, 1)
        if not 1 <= count <= limit or address + count > 0x10000:
            raise ValueError(f"count {count} out of 1..{limit} for function {function}")
        if self._queue is None or self._task is None:
            raise self._io("bus not started", unit)
        loop = asyncio.get_running_loop()
        job = _Job(
            unit, function, address, count, values, Priority(priority), max(0, retries),
            loop.create_future(), time.monotonic(),
        )
        self._queue.put_nowait((int(job.priority), next(self._seq), job))
        return await job.future

    # --- the owner task --------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._queue is not None
        while self._task is not None:
            if not self.connected:
                await self._try_connect()
            try:
                if self.connected:
                    _, _, job = await self._queue.get()
                else:
                    _, _, job = await asyncio.wait_for(
                        self._queue.get(), timeout=self.reconnect_interval_s
                    )
            except TimeoutError:
                continue
            if job.future.done():  # the caller gave up while queued
                continue
            waited = time.monotonic() - job.submitted
            key = job.priority.name
            self.stats.queue_wait_max_s[key] = max(self.stats.queue_wait_max_s.get(key, 0), waited)
            try:
                result = await self._with_retries(job)
            except (DriverIOError, DriverTimeoutError, ModbusExceptionError) as exc:
                if not job.future.done():
                    job.future.set_exception(exc)
            else:
                if not job.future.done():
                    job.future.set_result(result)

    async def _with_retries(self, job: _Job) -> list[int]:
        attempt = 0
        while True:
            try:
                return await self._transact(job)
            except (DriverIOError, DriverTimeoutError):
                if attempt >= job.retries:
                    raise
                attempt += 1
                self.stats.retries += 1

    async def _transact(self, job: _Job) -> list[int]:
        started = time.monotonic()
        self.stats.transactions += 1
        try:
            if not self.connected and not await self._try_connect(rate_limited=True):
                self.stats.io_errors += 1
                raise self._io("port unavailable", job.unit, port=self.port)
            await self._respect_gap()
            rx_before = self._last_rx
            try:
                pdu = await self._call(job)
            except ModbusIOException as exc:
                garbled = self._last_rx != rx_before
                raise await self._failure(job, garbled=garbled) from exc
            except (ConnectionException, ModbusException, OSError) as exc:
                self.stats.io_errors += 1
                raise self._io(f"transport failed: {exc}", job.unit) from exc
            self._last_activity = time.monotonic()
            problem = self._mismatch(job, pdu) or self._bad_header(job, pdu)
            if problem is not None:
                self.stats.garbled += 1
                await self._drain(job)
                raise self._io(f"answer rejected: {problem}", job.unit)
            if pdu.isError():
                self.stats.exceptions += 1
                code = int(pdu.exception_code)
                raise ModbusExceptionError(
                    f"exception {code:02d} to function {job.function:02d}",
                    exception_code=code, bus=self.name, unit=job.unit, address=job.address,
                )
            self.stats.ok += 1
            return self._result(job, pdu)
        finally:
            self.stats.busy_s += time.monotonic() - started

    async def _failure(self, job: _Job, *, garbled: bool) -> DriverIOError | DriverTimeoutError:
        """Classify a failed exchange and hold the bus for the drain window."""
        if not self.connected:
            self.stats.io_errors += 1
            return self._io("port lost during transaction", job.unit)
        await self._drain(job)
        if garbled:
            self.stats.garbled += 1
            return self._io("garbled answer (CRC or framing error)", job.unit)
        self.stats.timeouts += 1
        return DriverTimeoutError(
            f"no answer within {self.timeout_s:.3f} s", bus=self.name, unit=job.unit,
            function=job.function, address=job.address,
        )

    async def _call(self, job: _Job) -> ModbusPDU:
        client = self._client
        assert client is not None
        fc, unit, addr, n = job.function, job.unit, job.address, job.count
        if fc == 1:
            return await client.read_coils(addr, count=n, device_id=unit)
        if fc == 2:
            return await client.read_discrete_inputs(addr, count=n, device_id=unit)
        if fc == 3:
            return await client.read_holding_registers(addr, count=n, device_id=unit)
        if fc == 4:
            return await client.read_input_registers(addr, count=n, device_id=unit)
        if fc == 5:
            return await client.write_coil(addr, bool(job.values[0]), device_id=unit)
        if fc == 6:
            return await client.write_register(addr, job.values[0], device_id=unit)
        if fc == 15:
            bits = [bool(v) for v in job.values]
            return await client.write_coils(addr, bits, device_id=unit)
        if fc == 16:
            return await client.write_registers(addr, list(job.values), device_id=unit)
        raise ValueError(f"unsupported function {fc}")

    @staticmethod
    def _mismatch(job: _Job, pdu: ModbusPDU) -> str | None:
        """Why ``pdu`` cannot be the answer to ``job`` (None when it can)."""
        if pdu.dev_id and pdu.dev_id != job.unit:
            return f"unit {pdu.dev_id} answered, asked {job.unit}"
        if pdu.isError():
            if pdu.function_code != job.function | 0x80:
                return f"exception for function {pdu.function_code & 0x7F}, asked {job.function}"
            return None
        if pdu.function_code != job.function:
            return f"function {pdu.function_code}, asked {job.function}"
        fc = job.function
        if fc in (3, 4) and len(pdu.registers) != job.count:
            return f"{len(pdu.registers)} registers, asked {job.count}"
        if fc in (1, 2) and len(pdu.bits) != (job.count + 7) // 8 * 8:
            return f"{len(pdu.bits)} bits, asked {job.count}"
        if fc in (5, 6, 15, 16) and pdu.address != job.address:
            return f"write echo address {pdu.address}, sent {job.address}"
        if fc == 5 and (not pdu.bits or bool(pdu.bits[0]) != bool(job.values[0])):
            return "write coil echo differs"
        if fc == 6 and (not pdu.registers or pdu.registers[0] != job.values[0]):
            return "write register echo differs"
        if fc in (15, 16) and pdu.count != job.count:
            return f"write echo count {pdu.count}, sent {job.count}"
        return None

    @staticmethod
    def _result(job: _Job, pdu: ModbusPDU) -> list[int]:
        if job.function in (3, 4):
            return [int(v) for v in pdu.registers]
        if job.function in (1, 2):
            return [int(bool(b)) for b in pdu.bits[: job.count]]
        return []

    # --- line discipline -------------------------------------------------------------------

    async def _respect_gap(self) -> None:
        """Keep the t3.5 silent interval after the last frame (pymodbus does not)."""
        wait = self._last_activity + self.timing.gap() - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _drain(self, job: _Job) -> None:
        """Hold the bus until a late answer has certainly arrived and been dropped."""
        if self.is_tcp:
            return
        assert isinstance(self.timing, LineTiming)
        expected = _response_bytes(job)
        await asyncio.sleep(self.timing.drain_time(self.latency_of(job.unit), expected))
        quiet = max(3 * self.timing.gap(), 0.005)
        deadline = time.monotonic() + max(1.0, 4 * self.timeout_s)
        while (left := self._last_rx + quiet - time.monotonic()) > 0:
            if time.monotonic() > deadline:  # a babbling line: give up holding it
                break
            await asyncio.sleep(left)
        self._last_activity = time.monotonic()

    def _bad_header(self, job: _Job, pdu: ModbusPDU) -> str | None:
        """Check the raw frame's byte count, which pymodbus 3.16.1 does not: a read answer
        with one byte too many (valid CRC) is otherwise decoded shifted (found by hil.fuzz)."""
        if self.is_tcp or pdu.isError() or job.function not in (1, 2, 3, 4):
            return None  # TCP frames carry an MBAP length; pymodbus checks it
        buf = self._rx_buffer
        expected = 2 * job.count if job.function in (3, 4) else (job.count + 7) // 8
        if len(buf) < 3 or buf[0] != job.unit or buf[1] != job.function:
            return "answer header does not match the request"
        if buf[2] != expected:
            return f"byte count {buf[2]}, expected {expected}"
        return None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        now = time.monotonic()
        if sending:
            self._rx_buffer = b""
        else:
            self._last_rx = now
            self._rx_buffer = bytes(data)
        self._last_activity = now
        return data

    # --- connection ------------------------------------------------------------------------

    def _make_client(self) -> AsyncModbusSerialClient | AsyncModbusTcpClient:
        common: dict[str, Any] = {
            "name": self.name,
            "reconnect_delay": 0,  # the scheduler reconnects
            "timeout": self.timeout_s,
            "retries": 0,  # the scheduler decides
            "trace_packet": self._trace_packet,
        }
        if self.is_tcp:
            host, _, port = self.port.removeprefix("tcp://").rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"bus {self.name}: {self.port!r} is not tcp://host:port")
            return AsyncModbusTcpClient(host, port=int(port), framer=FramerType.SOCKET, **common)
        assert isinstance(self.timing, LineTiming)
        return AsyncModbusSerialClient(
            self.port,
            framer=FramerType.RTU,
            baudrate=self.timing.baud,
            bytesize=8,
            parity=self.timing.parity.upper(),
            stopbits=self.timing.stopbits,
            **common,
        )

    async def _try_connect(self, *, rate_limited: bool = False) -> bool:
        client = self._client
        if client is None:
            return False
        if client.connected:
            return True
        now = time.monotonic()
        if rate_limited and now - self._last_connect_try < self.reconnect_interval_s:
            return False
        self._last_connect_try = now
        try:
            ok = bool(await client.connect())
        except (OSError, ModbusException):
            ok = False
        if ok:
            await asyncio.sleep(0)  # let the transport call connection_made
            if self._was_connected:
                self.stats.reconnects += 1
            self._was_connected = True
        return ok and client.connected

    def _io(self, message: str, unit: int, **context: object) -> DriverIOError:
        return DriverIOError(message, bus=self.name, unit=unit, **context)
