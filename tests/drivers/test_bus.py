"""BusScheduler over a real pty with line timing: priorities, stale answers, faults, replug."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.bus import BusScheduler, Priority
from drivers.errors import DriverError, DriverIOError, DriverTimeoutError, ModbusExceptionError
from drivers.pilot_board import PilotBoardDriver
from hil.poll import wait_until
from hil.ptybridge import LineSettings
from tests.drivers.rigs import rig

METER, PILOT = 1, 2
HOLDING = [1000 + i for i in range(20)]


def device(unit: int) -> SimDevice:
    bits = [SimData(0, values=False, datatype=DataType.BITS)]
    return SimDevice(
        id=unit,
        simdata=(
            list(bits),
            list(bits),
            [SimData(0, values=[v + unit * 100 for v in HOLDING], datatype=DataType.REGISTERS)],
            [SimData(0, values=list(range(8)), datatype=DataType.REGISTERS)],
        ),
    )


def expected(unit: int, address: int, count: int) -> list[int]:
    return [v + unit * 100 for v in HOLDING[address : address + count]]


async def test_pilot_poll_overtakes_queued_meter_reads() -> None:
    # the meter's first answer is held until everything is queued: a latency would race the
    # queueing on a loaded machine
    async with rig([device(METER), device(PILOT)], LineSettings(9600), timeout_s=5.0) as r:
        r.sim.hold(METER)
        first = asyncio.create_task(r.bus.read(METER, 3, 0, 10))
        await wait_until(lambda: len(r.sim.accesses) == 1)  # the first meter read is on the wire
        queued = [asyncio.create_task(r.bus.read(METER, 3, a, 2)) for a in (2, 4, 6)]
        await wait_until(lambda: r.bus.queued == 3)
        poll = asyncio.create_task(PilotBoardDriver(r.bus, PILOT).read_sample())
        await wait_until(lambda: r.bus.queued == 4)
        r.sim.release(METER)
        await asyncio.gather(first, poll, *queued)
    order = [(unit, address) for unit, _, address, _ in r.sim.accesses]
    assert order == [(METER, 0), (PILOT, 0), (METER, 2), (METER, 4), (METER, 6)]
    assert [t.result() for t in queued] == [expected(METER, a, 2) for a in (2, 4, 6)]


async def test_safety_write_beats_pilot_poll_and_fifo_within_priority() -> None:
    async with rig([device(METER), device(PILOT)], timeout_s=5.0) as r:
        r.sim.hold(METER)  # the first answer waits until all four are queued
        first = asyncio.create_task(r.bus.read(METER, 3, 0, 1))
        await wait_until(lambda: len(r.sim.accesses) == 1)
        jobs = [
            r.bus.read(PILOT, 4, 0, 1, priority=Priority.PILOT_POLL),
            r.bus.write_register(PILOT, 5, 1, priority=Priority.CONTROL),
            r.bus.write_register(PILOT, 6, 2, priority=Priority.CONTROL),
            r.bus.write_coil(PILOT, 0, False, priority=Priority.SAFETY_WRITE),
        ]
        tasks: list[asyncio.Task[object]] = []
        for job in jobs:
            tasks.append(asyncio.create_task(job))
            queued = len(tasks)
            await wait_until(lambda: r.bus.queued == queued)  # noqa: B023
        r.sim.release(METER)
        await asyncio.gather(first, *tasks)
    fcs = [(fc, address) for _, fc, address, _ in r.sim.accesses[1:]]
    assert fcs == [(5, 0), (4, 0), (6, 5), (6, 6)]


async def test_late_answer_is_drained_not_taken_for_the_next_request() -> None:
    # the device may take 0.5 s, more than the 0.3 s timeout, and the bus is told so; without
    # the drain, the late 10-register answer would land in the next request's window
    async with rig([device(METER)], timeout_s=0.3, unit_latency_s={METER: 0.5}) as r:
        r.sim.set_latency(METER, 0.4)
        with pytest.raises(DriverTimeoutError):
            await r.bus.read(METER, 3, 0, 10)
        r.sim.set_latency(METER, 0.1)
        assert await r.bus.read(METER, 3, 5, 2) == expected(METER, 5, 2)
        r.sim.set_latency(METER, 0.0)
        assert await r.bus.read(METER, 3, 0, 10) == expected(METER, 0, 10)
        assert r.bus.stats.timeouts == 1 and r.bus.stats.garbled == 0
        # the late answer arrived while no request was pending: dropped and counted
        assert r.bus.stray_bytes == 5 + 2 * 10


async def test_a_cancelled_caller_leaves_the_bus_held_for_the_late_answer() -> None:
    # an idle bus runs a transaction in the caller's task; if that caller is cancelled with
    # the request on the wire, the answer still comes and must not be taken for the next one
    async with rig([device(METER)], timeout_s=0.3, unit_latency_s={METER: 0.2}) as r:
        r.sim.set_latency(METER, 0.1)
        first = asyncio.create_task(r.bus.read(METER, 3, 0, 2))
        await wait_until(lambda: len(r.sim.accesses) == 1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        r.sim.set_latency(METER, 0.0)
        assert await r.bus.read(METER, 3, 4, 2) == expected(METER, 4, 2)
        assert r.bus.stray_bytes == 5 + 2 * 2


async def test_tcp_bus_reads_and_maps_exceptions() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ModbusTcpServer([device(METER)], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        async with BusScheduler("tcp", f"tcp://127.0.0.1:{port}", timeout_s=0.5) as bus:
            await wait_until(lambda: bus.connected)
            assert await bus.read(METER, 3, 2, 3) == expected(METER, 2, 3)
            with pytest.raises(ModbusExceptionError):
                await bus.read(METER, 3, 100, 1)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


async def test_late_answer_is_rejected_by_validation_when_latency_is_underestimated() -> None:
    # misconfigured: the bus believes the device answers at once, so the drain is short and
    # the late 10-register answer arrives while the next request (2 registers) is pending
    async with rig([device(METER)], timeout_s=0.3, unit_latency_s={METER: 0.0}) as r:
        r.sim.set_latency(METER, 0.5)
        with pytest.raises(DriverTimeoutError):
            await r.bus.read(METER, 3, 0, 10)
        r.sim.set_latency(METER, 0.4)
        with pytest.raises(DriverIOError, match="answer rejected"):
            await r.bus.read(METER, 3, 5, 2)
        r.sim.set_latency(METER, 0.0)
        await asyncio.sleep(0.5)  # let the line settle; the next request gets its own answer
        assert await r.bus.read(METER, 3, 5, 2) == expected(METER, 5, 2)
        assert r.bus.stats.garbled == 1


async def test_exception_response_and_absent_unit() -> None:
    async with rig([device(METER)]) as r:
        with pytest.raises(ModbusExceptionError) as info:
            await r.bus.read(METER, 3, 100, 2)
        assert info.value.exception_code == 2 and info.value.unit == METER
        with pytest.raises(DriverTimeoutError) as timeout:
            await r.bus.read(9, 3, 0, 1)  # nobody has unit 9: silence
        assert timeout.value.unit == 9 and timeout.value.bus == "test"
        assert await r.bus.read(METER, 3, 0, 2) == expected(METER, 0, 2)
        stats = r.bus.stats
        assert (stats.exceptions, stats.timeouts, stats.ok, stats.transactions) == (1, 1, 1, 3)


async def test_crc_corruption_is_counted_and_the_next_transaction_succeeds() -> None:
    corrupt = {"armed": True}

    def mutate(direction: str, data: bytes) -> bytes:
        if direction == "b->a" and corrupt["armed"]:
            corrupt["armed"] = False
            return data[:-1] + bytes([data[-1] ^ 0xFF])  # break the CRC
        return data

    async with rig([device(METER)], mutate=mutate) as r:
        with pytest.raises(DriverIOError, match="garbled"):
            await r.bus.read(METER, 3, 0, 4)
        assert await r.bus.read(METER, 3, 0, 4) == expected(METER, 0, 4)
        assert (r.bus.stats.garbled, r.bus.stats.timeouts, r.bus.stats.ok) == (1, 0, 1)


async def test_retries_are_the_schedulers_decision() -> None:
    drops = {"left": 1}

    def mutate(direction: str, data: bytes) -> bytes | None:
        if direction == "b->a" and drops["left"]:
            drops["left"] -= 1
            return None  # the answer is lost on the line
        return data

    async with rig([device(METER)], mutate=mutate) as r:
        assert await r.bus.read(METER, 3, 0, 2, retries=1) == expected(METER, 0, 2)
        assert (r.bus.stats.retries, r.bus.stats.timeouts) == (1, 1)
        assert r.sim.accesses.count((METER, 3, 0, 2)) == 2  # pymodbus itself did not retry


async def test_vanished_port_errors_then_recovers_by_itself(tmp_path: Path) -> None:
    link = tmp_path / "ttyAGENT"
    async with rig([device(METER)], link_a=link, reconnect_interval_s=0.1) as r:
        assert await r.bus.read(METER, 3, 0, 1) == expected(METER, 0, 1)
        r.bridge.vanish()
        await wait_until(lambda: not r.bus.connected)
        for _ in range(3):
            with pytest.raises(DriverIOError):
                await r.bus.read(METER, 3, 0, 1)
        r.bridge.restore()
        await wait_until(lambda: r.bus.connected)  # nobody asked: the owner task reconnects
        assert await r.bus.read(METER, 3, 0, 1) == expected(METER, 0, 1)
        assert r.bus.stats.reconnects == 1
        assert r.bus.stats.io_errors >= 3


async def test_missing_port_at_start_and_stopped_bus(tmp_path: Path) -> None:
    bus = BusScheduler("ghost", str(tmp_path / "nothing"), timeout_s=0.1)
    async with bus:
        with pytest.raises(DriverIOError, match="port unavailable"):
            await bus.read(1, 3, 0, 1)
    with pytest.raises(DriverError, match="not started"):
        await bus.read(1, 3, 0, 1)
    with pytest.raises(ValueError):
        await bus.read(1, 3, 0, 126)


async def test_an_answer_already_on_the_port_when_the_timer_runs_is_taken() -> None:
    # After the agent was not scheduled, epoll can report the expired timer before the read
    # event of an answer that came in time: the link reads the port before it says "no
    # answer". The read event is withheld here (the reader removed) to put the timer first.
    async with rig([device(METER)], timeout_s=0.1) as r:
        link = r.bus.line.link
        loop = asyncio.get_running_loop()
        loop.remove_reader(link._fd)  # type: ignore[union-attr]
        try:
            assert await r.bus.read(METER, 3, 0, 2) == expected(METER, 0, 2)
        finally:
            loop.add_reader(link._fd, link._on_readable)  # type: ignore[union-attr]
        assert r.bus.stats.timeouts == 0
        assert await r.bus.read(METER, 3, 4, 2) == expected(METER, 4, 2)


async def test_a_late_answer_unread_when_the_drain_ended_is_dropped_before_the_next_request(
        ) -> None:
    # The drain waits by the wall clock; after a stall its wait can end before the loop has
    # run the read event of the late answer. Withheld read events model that here: the late
    # 10-register answer lies on the port when the next request goes out, and must not be
    # taken for its answer (the bus believes the device answers at once: a short drain).
    async with rig([device(METER)], timeout_s=0.05, unit_latency_s={METER: 0.0}) as r:
        link = r.bus.line.link
        loop = asyncio.get_running_loop()
        loop.remove_reader(link._fd)  # type: ignore[union-attr]
        try:
            r.sim.set_latency(METER, 0.1)
            with pytest.raises(DriverTimeoutError):
                await r.bus.read(METER, 3, 0, 10)
            await asyncio.sleep(0.2)  # the late answer arrives; no read event runs
            r.sim.set_latency(METER, 0.0)
            assert await r.bus.read(METER, 3, 5, 2) == expected(METER, 5, 2)
        finally:
            loop.add_reader(link._fd, link._on_readable)  # type: ignore[union-attr]
        assert link.stray_bytes == 5 + 2 * 10  # type: ignore[union-attr]
        assert r.bus.stats.garbled == 0
