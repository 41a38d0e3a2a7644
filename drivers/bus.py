"""One owner per bus: a single asyncio task runs every Modbus transaction of one port.

RS-485 is half duplex and Modbus RTU has no transaction id, so several tasks sharing a port
would interleave, and a late answer could be taken for the next question. ``BusScheduler`` owns
the link of one port, built inside the running loop, and runs one transaction at a time, lowest
``Priority`` first, FIFO within a priority. When the bus is idle and nothing is queued, the
caller's own task runs its transaction (no hand-over to the owner task and back: two event-loop
wake-ups fewer per poll); anything submitted meanwhile queues for the owner task, which takes
the highest priority once the wire is free. It never splits a transaction: callers (the meter
driver) split long reads into short blocks so that no transaction holds the bus for long
(``drivers.linetime`` turns this into a reaction bound).

The wire itself is ``drivers.modbus_link``: a serial port driven by the loop's reader callback
with pymodbus's RTU framer (framing and CRC), or pymodbus's TCP client. Retries and reconnects
are the scheduler's.

Stale answers: on RTU nothing pairs an answer with its request, so after a timeout a late reply
could be taken for the answer to the next request. The scheduler therefore

1. validates every answer: device id, function code, register/bit count and the raw byte count
   (reads), address and value or count echo (writes); an answer that does not fit is rejected
   (``DriverIOError``, counted as ``garbled``), never returned;
2. after a timeout or a rejected answer, holds the bus for the drain window: the device's
   worst-case latency + the line time of the answer it could still send + t3.5, extended until
   the line has been quiet for a few character times. Bytes arriving while no request is
   pending are dropped by the link (``stray_bytes``), and each request starts with an empty
   receive buffer.

So a late answer is never returned for another request, as long as the configured
``device_latency_s`` covers the device; if it does not, check (1) still rejects the answer
unless it happens to have the same unit, function and count (then it is indistinguishable on
RTU by construction: configure a timeout above the device's latency).

CRC errors: the framer rejects the frame; bytes that arrived but never made a valid frame count
as ``garbled`` and raise ``DriverIOError``; silence raises ``DriverTimeoutError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from pymodbus.pdu import ModbusPDU

from drivers.errors import DriverIOError, DriverTimeoutError, ModbusExceptionError
from drivers.linetime import TCP_DEFAULT_TRANSACTION_S, LineTiming, TcpTiming
from drivers.modbus_answer import answer_values, expected_answer_bytes, mismatch, raw_mismatch
from drivers.modbus_link import (
    LinkLostError,
    LinkTimeoutError,
    RtuLink,
    TcpLink,
    make_link,
    request_pdu,
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
        self._link: RtuLink | TcpLink | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_activity = 0.0
        self._last_connect_try = -1e9
        self._was_connected = False
        self._wire_free = True  # no transaction on the wire (inline or by the owner task)
        self._kick = asyncio.Event()  # a job was queued or the wire was released
        # RTU read requests never change (the pilot poll sends the same 8 bytes every 10 ms):
        # their pymodbus PDU and frame are built once per (unit, function, address, count).
        self._read_requests: dict[tuple[int, int, int, int], tuple[ModbusPDU, bytes]] = {}

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> BusScheduler:
        """Build the link in the running loop, try to connect, start the owner task."""
        if self._task is not None:
            return self
        self._queue = asyncio.PriorityQueue()
        line = self.timing if isinstance(self.timing, LineTiming) else LineTiming(9600)
        self._link = make_link(self.name, self.port, timeout_s=self.timeout_s, baud=line.baud,
                               parity=line.parity, stopbits=line.stopbits)
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
        if self._link is not None:
            self._link.close()
            self._link = None

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
        return self._link is not None and self._link.connected

    @property
    def stray_bytes(self) -> int:
        """Bytes that arrived while no request was pending (late answers, noise): dropped."""
        return 0 if self._link is None else self._link.stray_bytes

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
        if self._wire_free and self._queue.empty() and self.connected:
            return await self._run_inline(job)
        self._queue.put_nowait((int(job.priority), next(self._seq), job))
        self._kick.set()
        return await job.future

    async def _run_inline(self, job: _Job) -> list[int]:
        """Nothing else wants the bus: run the transaction in the caller's own task. Handing
        it to the owner task and back costs two event-loop wake-ups per transaction, which on
        the 10 ms pilot poll was a good part of the agent's CPU. Order is unchanged: a job
        submitted meanwhile queues, and the owner task runs it once the wire is free."""
        self._claim_wire()
        try:
            return await self._with_retries(job)
        except asyncio.CancelledError:
            # The caller went away with a request on the wire: hold the bus as after a
            # timeout, so that a late answer is dropped, not taken for the next request.
            self._hold_for_drain(job)
            raise
        finally:
            self._release_wire()

    def _claim_wire(self) -> None:
        self._wire_free = False

    def _release_wire(self) -> None:
        self._wire_free = True
        if self._queue is not None and not self._queue.empty():
            self._kick.set()  # the owner task takes the highest priority waiting

    def _hold_for_drain(self, job: _Job) -> None:
        if isinstance(self.timing, LineTiming):
            hold = self.timing.drain_time(self.latency_of(job.unit), expected_answer_bytes(job))
            self._last_activity = max(self._last_activity, time.monotonic() + hold)

    # --- the owner task --------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._queue is not None
        while self._task is not None:
            if not self.connected:
                await self._try_connect()
            if self._queue.empty() or not self._wire_free:
                # Dequeue only when the wire is free, so the highest priority waiting then
                # goes next (a job taken early could be overtaken by a later safety write).
                self._kick.clear()
                timeout = None if self.connected else self.reconnect_interval_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), timeout)
                continue
            _, _, job = self._queue.get_nowait()
            self._claim_wire()
            try:
                await self._run_job(job)
            finally:
                self._release_wire()

    async def _run_job(self, job: _Job) -> None:
        if job.future.done():  # the caller gave up while the wire was busy
            return
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
            assert self._link is not None
            request, frame = self._request(job, self._link)
            try:
                pdu = await self._link.exchange(request, self.timeout_s, frame)
            except LinkTimeoutError as exc:
                raise await self._failure(job, garbled=exc.garbled) from exc
            except LinkLostError as exc:
                self.stats.io_errors += 1
                raise self._io(f"transport failed: {exc}", job.unit) from exc
            self._last_activity = time.monotonic()
            problem = mismatch(job, pdu) or (
                None if self.is_tcp else raw_mismatch(job, pdu, self._link.rx_frame))
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
            return answer_values(job, pdu)
        finally:
            self.stats.busy_s += time.monotonic() - started

    def _request(self, job: _Job, link: RtuLink | TcpLink) -> tuple[ModbusPDU, bytes | None]:
        if job.function not in READ_FUNCTIONS or not isinstance(link, RtuLink):
            return request_pdu(job.function, job.unit, job.address, job.count, job.values), None
        key = (job.unit, job.function, job.address, job.count)
        kept = self._read_requests.get(key)
        if kept is None:
            pdu = request_pdu(job.function, job.unit, job.address, job.count, ())
            kept = self._read_requests[key] = (pdu, link.build_frame(pdu))
        return kept

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
        expected = expected_answer_bytes(job)
        await asyncio.sleep(self.timing.drain_time(self.latency_of(job.unit), expected))
        quiet = max(3 * self.timing.gap(), 0.005)
        deadline = time.monotonic() + max(1.0, 4 * self.timeout_s)
        while (left := self._last_rx() + quiet - time.monotonic()) > 0:
            if time.monotonic() > deadline:  # a babbling line: give up holding it
                break
            await asyncio.sleep(left)
        self._last_activity = time.monotonic()

    def _last_rx(self) -> float:
        return 0.0 if self._link is None else self._link.last_rx

    # --- connection ------------------------------------------------------------------------

    async def _try_connect(self, *, rate_limited: bool = False) -> bool:
        link = self._link
        if link is None:
            return False
        if link.connected:
            return True
        now = time.monotonic()
        if rate_limited and now - self._last_connect_try < self.reconnect_interval_s:
            return False
        self._last_connect_try = now
        ok = await link.open()
        if ok:
            if self._was_connected:
                self.stats.reconnects += 1
            self._was_connected = True
        return ok and link.connected

    def _io(self, message: str, unit: int, **context: object) -> DriverIOError:
        return DriverIOError(message, bus=self.name, unit=unit, **context)
