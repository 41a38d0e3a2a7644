"""Pilot board and relay board drivers against minimal device-side SimDevices on a pty."""

from __future__ import annotations

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.board_maps import PILOT_BOARD_MAP, duty_cmd_is_valid
from drivers.errors import ModbusExceptionError
from drivers.interfaces import Contactor, PilotBoard, PilotBoardSample, RelayInputs
from drivers.pilot_board import PilotBoardDriver
from drivers.relay_board import RelayBoardDriver, relay_board_wire
from hil.modbus_server import SimulatedBus
from tests.drivers.rigs import rig

PILOT, RELAY = 1, 2
SAMPLE = [9000, (-12000) & 0xFFFF, 533, 680, 0b1001, 4242, 253, 0x0100]


async def reject_illegal_duty(
    fc: int, start: int, address: int, count: int, regs: list[int], values: object
) -> ExcCodes | None:
    """The board refuses a duty_cmd outside its table with exception 03 (hardware.md)."""
    duty = PILOT_BOARD_MAP["duty_cmd"].address
    refused = isinstance(values, list) and not duty_cmd_is_valid(int(values[0]))
    if fc in (6, 16) and address == duty and refused:
        return ExcCodes.ILLEGAL_VALUE
    return None


def pilot_device() -> SimDevice:
    bits = [SimData(0, values=False, datatype=DataType.BITS)]
    return SimDevice(
        id=PILOT,
        simdata=(
            list(bits),
            list(bits),
            [SimData(0x0100, values=[1000, 3000, 0, 0], datatype=DataType.REGISTERS)],
            [SimData(0, values=SAMPLE, datatype=DataType.REGISTERS)],
        ),
        action=reject_illegal_duty,
    )


def relay_device() -> SimDevice:
    return SimDevice(
        id=RELAY,
        simdata=(
            [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
            [SimData(0, datatype=DataType.INVALID)],
            [SimData(0, datatype=DataType.INVALID)],
        ),
    )


def mirror_coils(sim: SimulatedBus) -> None:
    """The relay board's auxiliary contacts follow its coils (contactor and lock)."""

    async def on_write(unit: int, fc: int, address: int, values: list[int] | list[bool]) -> None:
        await sim.set_values(unit, 2, address, [bool(v) for v in values])

    sim.on_write(RELAY, on_write)


async def test_pilot_sample_is_decoded_from_one_fc04_block() -> None:
    async with rig([pilot_device()]) as r:
        board = PilotBoardDriver(r.bus, PILOT)
        assert isinstance(board, PilotBoard)
        sample = await board.read_sample()
    assert sample == PilotBoardSample(
        cp_high_mv=9000, cp_low_mv=-12000, duty_actual=533, cc_ohm=680, status=0b1001,
        sample_seq=4242, temperature_c=25.3, fw_version=0x0100,
    )
    assert r.sim.accesses == [(PILOT, 4, 0, 8)]


async def test_pilot_commands_reach_their_registers() -> None:
    async with rig([pilot_device()]) as r:
        board = PilotBoardDriver(r.bus, PILOT)
        await board.set_duty(267)
        await board.set_watchdog(1500)
        await board.heartbeat()
        await board.fault_reset()
        held = await r.sim.get_values(PILOT, 3, 0x0100, 4)
    assert held == [267, 1500, 1, 1]


async def test_illegal_duty_is_refused_before_the_wire() -> None:
    async with rig([pilot_device()]) as r:
        with pytest.raises(ValueError):
            await PilotBoardDriver(r.bus, PILOT).set_duty(50)
        assert r.sim.accesses == []
        assert r.bus.stats.transactions == 0


async def test_board_exception_03_becomes_modbus_exception_error() -> None:
    async with rig([pilot_device()]) as r:
        with pytest.raises(ModbusExceptionError) as info:
            await r.bus.write_register(PILOT, 0x0100, 50)  # what a buggy caller could send
        assert info.value.exception_code == 3
        assert info.value.unit == PILOT and info.value.bus == "test"
        assert await r.sim.get_values(PILOT, 3, 0x0100, 1) == [1000]  # unchanged
        assert r.bus.stats.exceptions == 1
        # the bus carries on
        assert (await PilotBoardDriver(r.bus, PILOT).read_sample()).sample_seq == 4242


async def test_relay_contactor_and_lock_follow_commands() -> None:
    async with rig([pilot_device(), relay_device()], before_start=mirror_coils) as r:
        relay = RelayBoardDriver(r.bus, RELAY)
        assert isinstance(relay, Contactor)
        assert await relay.read_inputs() == RelayInputs(False, False)
        await relay.set_contactor(True)
        await relay.set_lock(True)
        assert await r.sim.get_values(RELAY, 1, 0, 2) == [True, True]
        # the mirror contacts follow the coils (set by the device-side write hook)
        inputs = await relay.read_inputs()
        assert inputs == RelayInputs(contactor_closed=True, lock_engaged=True)
        await relay.set_contactor(False)
        assert await r.sim.get_values(RELAY, 1, 0, 1) == [False]
        assert (await relay.read_inputs()).contactor_closed is False
    writes = [a for a in r.sim.accesses if a[1] == 5]
    assert writes == [(RELAY, 5, 0, 1), (RELAY, 5, 1, 1), (RELAY, 5, 0, 1)]


async def test_relay_with_custom_wiring() -> None:
    async with rig([relay_device()], before_start=mirror_coils) as r:
        relay = RelayBoardDriver(r.bus, wire=relay_board_wire(
            RELAY, contactor_coil=3, lock_coil=5, contactor_feedback_input=4,
            lock_feedback_input=2))
        await r.sim.set_values(RELAY, 2, 4, [True])
        assert await relay.read_inputs() == RelayInputs(contactor_closed=True, lock_engaged=False)
        await relay.set_lock(True)
        assert await r.sim.get_values(RELAY, 1, 5, 1) == [True]
        assert await r.sim.get_values(RELAY, 1, 3, 1) == [False]
