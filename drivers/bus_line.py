"""One transaction done right on one port: the line discipline under ``BusScheduler``.

The scheduler decides *which* transaction goes next; ``BusLine`` runs it: it keeps the t3.5
silent interval, validates the answer against the request (``drivers.modbus_answer``), holds
the bus for the drain window after a timeout or a rejected answer, reconnects a lost port at
a limited rate and keeps the counters (``BusStats``). See ``drivers.bus`` for why.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from pymodbus.pdu import ModbusPDU

from drivers.errors import DriverIOError, DriverTimeoutError, ModbusExceptionError
from drivers.linetime import LineTiming, TcpTiming
from drivers.modbus_answer import answer_values, expected_answer_bytes, mismatch, raw_mismatch
from drivers.modbus_link import (
    LinkLostError,
    LinkTimeoutError,
    RtuLink,
    TcpLink,
    make_link,
    request_pdu,
)
from drivers.wire import READ_FUNCTIONS, Priority


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
    undeclared: int = 0  # transactions no driver declared for this bus (see drivers.wire)
    busy_s: float = 0.0
    queue_wait_max_s: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Job:
    """One transaction waiting for (or on) the wire."""

    unit: int
    function: int
    address: int
    count: int
    values: tuple[int, ...]  # written values (bits as 0/1)
    priority: Priority
    retries: int
    future: asyncio.Future[list[int]]
    submitted: float


class BusLine:
    """The link of one port and its discipline; ``transact`` runs one job, retried."""

    def __init__(self, name: str, port: str, timing: LineTiming | TcpTiming, *,
                 timeout_s: float, device_latency_s: float, unit_latency_s: dict[int, float],
                 reconnect_interval_s: float) -> None:
        self.name = name
        self.port = port
        self.timing = timing
        self.is_tcp = isinstance(timing, TcpTiming)
        self.timeout_s = timeout_s
        self.device_latency_s = device_latency_s
        self.unit_latency_s = unit_latency_s
        self.reconnect_interval_s = reconnect_interval_s
        self.stats = BusStats()
        self.link: RtuLink | TcpLink | None = None
        self._last_activity = 0.0
        self._last_connect_try = -1e9
        self._was_connected = False
        # RTU read requests never change (the pilot poll sends the same 8 bytes every 10 ms):
        # their pymodbus PDU and frame are built once per (unit, function, address, count).
        self._read_requests: dict[tuple[int, int, int, int], tuple[ModbusPDU, bytes]] = {}

    def open_link(self) -> None:
        """Build the link (inside the running loop, as pymodbus requires)."""
        line = self.timing if isinstance(self.timing, LineTiming) else LineTiming(9600)
        self.link = make_link(self.name, self.port, timeout_s=self.timeout_s, baud=line.baud,
                              parity=line.parity, stopbits=line.stopbits)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    @property
    def connected(self) -> bool:
        return self.link is not None and self.link.connected

    def latency_of(self, unit: int) -> float:
        return self.unit_latency_s.get(unit, self.device_latency_s)

    def hold_for_drain(self, job: Job) -> None:
        """The caller went away with a request on the wire: hold the bus as after a timeout."""
        if isinstance(self.timing, LineTiming):
            hold = self.timing.drain_time(self.latency_of(job.unit), expected_answer_bytes(job))
            self._last_activity = max(self._last_activity, time.monotonic() + hold)

    async def with_retries(self, job: Job) -> list[int]:
        attempt = 0
        while True:
            try:
                return await self._transact(job)
            except (DriverIOError, DriverTimeoutError):
                if attempt >= job.retries:
                    raise
                attempt += 1
                self.stats.retries += 1

    async def _transact(self, job: Job) -> list[int]:
        started = time.monotonic()
        self.stats.transactions += 1
        try:
            if not self.connected and not await self.try_connect(rate_limited=True):
                self.stats.io_errors += 1
                raise self.io_error("port unavailable", job.unit, port=self.port)
            await self._respect_gap()
            assert self.link is not None
            request, frame = self._request(job, self.link)
            try:
                pdu = await self.link.exchange(request, self.timeout_s, frame)
            except LinkTimeoutError as exc:
                raise await self._failure(job, garbled=exc.garbled) from exc
            except LinkLostError as exc:
                self.stats.io_errors += 1
                raise self.io_error(f"transport failed: {exc}", job.unit) from exc
            self._last_activity = time.monotonic()
            problem = mismatch(job, pdu) or (
                None if self.is_tcp else raw_mismatch(job, pdu, self.link.rx_frame))
            if problem is not None:
                self.stats.garbled += 1
                await self._drain(job)
                raise self.io_error(f"answer rejected: {problem}", job.unit)
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

    def _request(self, job: Job, link: RtuLink | TcpLink) -> tuple[ModbusPDU, bytes | None]:
        if job.function not in READ_FUNCTIONS or not isinstance(link, RtuLink):
            return request_pdu(job.function, job.unit, job.address, job.count, job.values), None
        key = (job.unit, job.function, job.address, job.count)
        kept = self._read_requests.get(key)
        if kept is None:
            pdu = request_pdu(job.function, job.unit, job.address, job.count, ())
            kept = self._read_requests[key] = (pdu, link.build_frame(pdu))
        return kept

    async def _failure(self, job: Job, *, garbled: bool) -> DriverIOError | DriverTimeoutError:
        """Classify a failed exchange and hold the bus for the drain window."""
        if not self.connected:
            self.stats.io_errors += 1
            return self.io_error("port lost during transaction", job.unit)
        await self._drain(job)
        if garbled:
            self.stats.garbled += 1
            return self.io_error("garbled answer (CRC or framing error)", job.unit)
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

    async def _drain(self, job: Job) -> None:
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
        return 0.0 if self.link is None else self.link.last_rx

    # --- connection ------------------------------------------------------------------------

    async def try_connect(self, *, rate_limited: bool = False) -> bool:
        link = self.link
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

    def io_error(self, message: str, unit: int, **context: object) -> DriverIOError:
        return DriverIOError(message, bus=self.name, unit=unit, **context)
