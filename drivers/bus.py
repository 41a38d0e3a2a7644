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
from collections.abc import Collection, Sequence

from drivers.bus_line import BusLine, BusStats, Job
from drivers.errors import DriverIOError, DriverTimeoutError, ModbusExceptionError
from drivers.linetime import TCP_DEFAULT_TRANSACTION_S, LineTiming, TcpTiming
from drivers.wire import MAX_COUNT, READ_FUNCTIONS, Priority, Transaction

__all__ = ["BusScheduler", "BusStats", "Priority", "Transaction"]


class BusScheduler:
    """The only user of one port. ``async with BusScheduler(...) as bus: await bus.run(txn)``.

    ``port`` is a serial device path or ``tcp://host:port``. ``device_latency_s`` is the
    worst-case time a device on this bus takes to start answering (per unit overrides in
    ``unit_latency_s``); it sizes the drain window after a timeout. ``declare`` gives it the
    transactions the drivers on this bus declared (``drivers.wire``); anything else it runs is
    counted in ``stats.undeclared``.
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
        self.is_tcp = port.startswith("tcp://")
        self.timing: LineTiming | TcpTiming = (
            TcpTiming(tcp_transaction_s) if self.is_tcp else LineTiming(baud, parity, stopbits)
        )
        self.line = BusLine(name, port, self.timing, timeout_s=timeout_s,
                            device_latency_s=device_latency_s,
                            unit_latency_s=dict(unit_latency_s or {}),
                            reconnect_interval_s=reconnect_interval_s)
        self.stats: BusStats = self.line.stats
        self.declared: frozenset[Transaction] = frozenset()
        self._queue: asyncio.PriorityQueue[tuple[int, int, Job]] | None = None
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._wire_free = True  # no transaction on the wire (inline or by the owner task)
        self._kick = asyncio.Event()  # a job was queued or the wire was released

    @property
    def timeout_s(self) -> float:
        return self.line.timeout_s

    @property
    def device_latency_s(self) -> float:
        return self.line.device_latency_s

    def latency_of(self, unit: int) -> float:
        return self.line.latency_of(unit)

    def declare(self, transactions: Collection[Transaction]) -> None:
        """The transactions the drivers on this bus will run (added to any declared before)."""
        self.declared = self.declared | frozenset(transactions)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> BusScheduler:
        """Build the link in the running loop, try to connect, start the owner task."""
        if self._task is not None:
            return self
        self._queue = asyncio.PriorityQueue()
        self.line.open_link()
        await self.line.try_connect()
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
                    job.future.set_exception(self.line.io_error("bus stopped", job.unit))
        self.line.close()

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
        return self.line.connected

    @property
    def stray_bytes(self) -> int:
        """Bytes that arrived while no request was pending (late answers, noise): dropped."""
        return 0 if self.line.link is None else self.line.link.stray_bytes

    # --- caller API ------------------------------------------------------------------------

    async def run(self, txn: Transaction, values: Sequence[int] = ()) -> list[int]:
        """Run a declared transaction: a read returns its words (bits as 0/1); a write sends
        ``values`` (one per register or bit, ``count`` of them)."""
        if self.declared and txn not in self.declared:
            self.stats.undeclared += 1
        if txn.is_read:
            if values:
                raise ValueError(f"{txn.label}: a read sends no values")
        elif len(values) != txn.count:
            raise ValueError(f"{txn.label}: {len(values)} values for {txn.count}")
        return await self._submit(txn.unit, txn.function, txn.address, txn.count,
                                  tuple(int(v) for v in values), txn.priority, 0)

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
        return await self._ad_hoc(unit, function, address, count, (), priority, retries)

    async def read_bits(
        self,
        unit: int,
        function: int,
        address: int,
        count: int,
        *,
        priority: Priority = Priority.CONTROL,
        retries: int = 0,
    ) -> list[bool]:
        """FC 01 (coils) or FC 02 (discrete inputs)."""
        if function not in (1, 2):
            raise ValueError(f"not a bit read function code: {function}")
        raw = await self._ad_hoc(unit, function, address, count, (), priority, retries)
        return [bool(v) for v in raw]

    async def write_register(
        self, unit: int, address: int, value: int, *,
        priority: Priority = Priority.CONTROL, retries: int = 0,
    ) -> None:
        """FC 06."""
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"register value {value} out of 0..65535")
        await self._ad_hoc(unit, 6, address, 1, (value,), priority, retries)

    async def write_registers(
        self, unit: int, address: int, values: Sequence[int], *,
        priority: Priority = Priority.CONTROL, retries: int = 0,
    ) -> None:
        """FC 10 (16)."""
        if any(not 0 <= v <= 0xFFFF for v in values):
            raise ValueError("register values must be 0..65535")
        await self._ad_hoc(unit, 16, address, len(values), tuple(values), priority, retries)

    async def write_coil(
        self, unit: int, address: int, value: bool, *,
        priority: Priority = Priority.CONTROL, retries: int = 0,
    ) -> None:
        """FC 05 (0xFF00 on, 0x0000 off)."""
        await self._ad_hoc(unit, 5, address, 1, (int(value),), priority, retries)

    async def write_coils(
        self, unit: int, address: int, values: Sequence[bool], *,
        priority: Priority = Priority.CONTROL, retries: int = 0,
    ) -> None:
        """FC 0F (15)."""
        bits = tuple(int(bool(v)) for v in values)
        await self._ad_hoc(unit, 15, address, len(bits), bits, priority, retries)

    async def _ad_hoc(self, unit: int, function: int, address: int, count: int,
                      values: tuple[int, ...], priority: Priority, retries: int) -> list[int]:
        """A transaction no driver declared (tools, tests): counted when a plan is declared."""
        if self.declared:
            self.stats.undeclared += 1
        return await self._submit(unit, function, address, count, values, priority, retries)

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
        limit = MAX_COUNT.get(function, 1)
        if not 1 <= count <= limit or address + count > 0x10000:
            raise ValueError(f"count {count} out of 1..{limit} for function {function}")
        if self._queue is None or self._task is None:
            raise self.line.io_error("bus not started", unit)
        loop = asyncio.get_running_loop()
        job = Job(
            unit, function, address, count, values, Priority(priority), max(0, retries),
            loop.create_future(), time.monotonic(),
        )
        if self._wire_free and self._queue.empty() and self.connected:
            return await self._run_inline(job)
        self._queue.put_nowait((int(job.priority), next(self._seq), job))
        self._kick.set()
        return await job.future

    async def _run_inline(self, job: Job) -> list[int]:
        """Nothing else wants the bus: run the transaction in the caller's own task. Handing
        it to the owner task and back costs two event-loop wake-ups per transaction, which on
        the 10 ms pilot poll was a good part of the agent's CPU. Order is unchanged: a job
        submitted meanwhile queues, and the owner task runs it once the wire is free."""
        self._claim_wire()
        try:
            return await self.line.with_retries(job)
        except asyncio.CancelledError:
            # The caller went away with a request on the wire: hold the bus as after a
            # timeout, so that a late answer is dropped, not taken for the next request.
            self.line.hold_for_drain(job)
            raise
        finally:
            self._release_wire()

    def _claim_wire(self) -> None:
        self._wire_free = False

    def _release_wire(self) -> None:
        self._wire_free = True
        if self._queue is not None and not self._queue.empty():
            self._kick.set()  # the owner task takes the highest priority waiting

    # --- the owner task --------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._queue is not None
        while self._task is not None:
            if not self.connected:
                await self.line.try_connect()
            if self._queue.empty() or not self._wire_free:
                # Dequeue only when the wire is free, so the highest priority waiting then
                # goes next (a job taken early could be overtaken by a later safety write).
                self._kick.clear()
                timeout = None if self.connected else self.line.reconnect_interval_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), timeout)
                continue
            _, _, job = self._queue.get_nowait()
            self._claim_wire()
            try:
                await self._run_job(job)
            finally:
                self._release_wire()

    async def _run_job(self, job: Job) -> None:
        if job.future.done():  # the caller gave up while the wire was busy
            return
        waited = time.monotonic() - job.submitted
        key = job.priority.name
        self.stats.queue_wait_max_s[key] = max(self.stats.queue_wait_max_s.get(key, 0), waited)
        try:
            result = await self.line.with_retries(job)
        except (DriverIOError, DriverTimeoutError, ModbusExceptionError) as exc:
            if not job.future.done():
                job.future.set_exception(exc)
        else:
            if not job.future.done():
                job.future.set_result(result)
