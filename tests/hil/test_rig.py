"""The rig without the agent: a pymodbus client plays the agent over the virtual serial ports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import yaml
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException

from drivers.board_maps import PILOT_SAMPLE_COUNT, PilotStatus
from hil.ev import current_from_duty
from hil.rig import Rig
from hil.scenario import RunResult, parse_scenario
from hil.scenario_runner import ScenarioRunner

PILOT, RELAY, METER = 1, 2, 1
DUTY_CMD, HEARTBEAT, FAULT_RESET, WATCHDOG = 0x100, 0x102, 0x103, 0x101


async def sample(client: AsyncModbusSerialClient) -> dict[str, int]:
    rr = await client.read_input_registers(0, count=PILOT_SAMPLE_COUNT, device_id=PILOT)
    assert not rr.isError()
    regs = [r - 0x10000 if i in (0, 1) and r & 0x8000 else r for i, r in enumerate(rr.registers)]
    names = ("cp_high", "cp_low", "duty", "cc", "status", "seq", "temp", "fw")
    return dict(zip(names, regs, strict=True))


async def until(condition: Callable[[], bool]) -> None:
    while True:
        if condition():
            return
        await asyncio.sleep(0.005)


async def start_charging(rig: Rig, control: AsyncModbusSerialClient) -> None:
    rig.ev_action("plug_in", cable_a=32)
    assert not (await control.write_register(DUTY_CMD, 533, device_id=PILOT)).isError()
    rig.ev_action("close_s2")
    assert not (await control.write_coil(0, True, device_id=RELAY)).isError()


async def test_pilot_sample_follows_the_ev(rig: Rig, control: AsyncModbusSerialClient) -> None:
    s = await sample(control)
    assert s["cp_high"] == 12000 and s["cc"] == 0xFFFF and s["duty"] == 1000
    rig.ev_action("plug_in", cable_a=32)
    s = await sample(control)
    assert 8200 <= s["cp_high"] <= 9800 and s["cc"] == 220
    rig.ev_action("close_s2")
    assert 5200 <= (await sample(control))["cp_high"] <= 6800


async def test_duty_533_offers_32a_to_the_ev(rig: Rig, control: AsyncModbusSerialClient) -> None:
    await start_charging(rig, control)
    s = await sample(control)
    assert s["duty"] == 533 and s["cp_low"] == -12000
    assert rig.offered_a() == pytest.approx(32, abs=0.05)
    await asyncio.sleep(0.6)
    assert rig.ev.current_a() == pytest.approx(32, abs=0.05)


@pytest.mark.parametrize("duty", [50, 980, 1001])
async def test_illegal_duty_gets_exception_03(
    rig: Rig, control: AsyncModbusSerialClient, duty: int
) -> None:
    rr = await control.write_register(DUTY_CMD, duty, device_id=PILOT)
    assert rr.isError() and rr.exception_code == 3
    assert (await sample(control))["duty"] == 1000


async def test_contactor_mirror_follows_coil_after_delay(
    rig: Rig, control: AsyncModbusSerialClient
) -> None:
    assert not (await control.write_coil(0, True, device_id=RELAY)).isError()
    first = (await control.read_discrete_inputs(0, count=2, device_id=RELAY)).bits[0]
    await asyncio.sleep(rig.options.relay_close_delay_s + 0.05)
    later = (await control.read_discrete_inputs(0, count=2, device_id=RELAY)).bits[0]
    assert (first, later) == (False, True)
    frames = rig.timeline.events("frame", what="contactor_close")
    assert len(frames) == 1 and frames[0].data["bus"] == "control"


async def test_weld_keeps_mirror_closed(rig: Rig, control: AsyncModbusSerialClient) -> None:
    await start_charging(rig, control)
    await asyncio.sleep(0.1)
    rig.inject("contactor_weld")
    await control.write_coil(0, False, device_id=RELAY)
    await asyncio.sleep(0.1)
    assert (await control.read_discrete_inputs(0, count=1, device_id=RELAY)).bits[0]
    assert rig.timeline.first("frame", 0.0, what="contactor_open") is not None


async def test_no_close_keeps_mirror_open(rig: Rig, control: AsyncModbusSerialClient) -> None:
    rig.inject("contactor_no_close")
    await control.write_coil(0, True, device_id=RELAY)
    await asyncio.sleep(0.1)
    assert not (await control.read_discrete_inputs(0, count=1, device_id=RELAY)).bits[0]


@pytest.mark.parametrize(("fault", "bit"), [
    ("rcd_trip", PilotStatus.RCD_TRIP), ("estop", PilotStatus.ESTOP),
    ("pe_loss", PilotStatus.PE_LOSS), ("overtemp", PilotStatus.OVERTEMP),
])
async def test_fault_bits_latch_until_reset_and_cause_gone(
    rig: Rig, control: AsyncModbusSerialClient, fault: str, bit: PilotStatus
) -> None:
    rig.inject(fault)
    assert (await sample(control))["status"] & bit
    rig.inject(fault, False)
    assert (await sample(control))["status"] & bit  # latched
    await control.write_register(FAULT_RESET, 1, device_id=PILOT)
    assert not (await sample(control))["status"] & bit


async def test_reset_keeps_bit_while_cause_present(
    rig: Rig, control: AsyncModbusSerialClient
) -> None:
    rig.inject("estop")
    await control.write_register(FAULT_RESET, 1, device_id=PILOT)
    assert (await sample(control))["status"] & PilotStatus.ESTOP


async def test_watchdog_forces_steady_plus_12v(
    rig: Rig, control: AsyncModbusSerialClient
) -> None:
    rig.ev_action("plug_in")
    await control.write_register(WATCHDOG, 100, device_id=PILOT)
    await control.write_register(DUTY_CMD, 533, device_id=PILOT)
    assert (await sample(control))["duty"] == 533
    await asyncio.sleep(0.2)
    s = await sample(control)
    assert s["duty"] == 1000 and s["status"] & PilotStatus.FAILSAFE
    assert s["cp_low"] == s["cp_high"]
    await control.write_register(HEARTBEAT, 1, device_id=PILOT)
    s = await sample(control)
    assert s["duty"] == 533 and s["status"] & PilotStatus.FAILSAFE  # latched


async def test_diode_short_and_cp_short(rig: Rig, control: AsyncModbusSerialClient) -> None:
    await start_charging(rig, control)
    rig.inject("diode_short")
    assert (await sample(control))["cp_low"] > -10500
    rig.inject("diode_short", False)
    rig.inject("cp_short")
    s = await sample(control)
    assert abs(s["cp_high"]) < 1000
    cp_events = rig.timeline.events("signal", name="cp_level_v", cause="cp_short")
    assert cp_events and cp_events[0].data["value"] == 0.0


async def test_freeze_stops_sample_seq(rig: Rig, control: AsyncModbusSerialClient) -> None:
    first = (await sample(control))["seq"]
    await asyncio.sleep(0.05)
    assert (await sample(control))["seq"] != first
    rig.inject("pilot_freeze")
    frozen = (await sample(control))["seq"]
    await asyncio.sleep(0.05)
    assert (await sample(control))["seq"] == frozen


async def test_crc_injection_corrupts_one_answer(
    rig: Rig, control: AsyncModbusSerialClient
) -> None:
    rig.inject("crc_errors", {"bus": "control", "count": 1})
    with pytest.raises(ModbusIOException):
        await control.read_input_registers(0, count=PILOT_SAMPLE_COUNT, device_id=PILOT)
    if not control.connected:
        assert await control.connect()
    assert (await sample(control))["fw"] == 0x0100
    assert rig.timeline.events("frame", bad=True)


async def test_meter_reports_ev_draw_and_integrates_energy(
    rig: Rig, control: AsyncModbusSerialClient, meter_client: AsyncModbusSerialClient
) -> None:
    await start_charging(rig, control)
    await asyncio.sleep(1.0)
    rr = await meter_client.read_input_registers(0x2002, count=2, device_id=METER)
    amps = meter_client.convert_from_registers(rr.registers, meter_client.DATATYPE.FLOAT32)
    assert amps == pytest.approx(32, abs=0.1)
    rr = await meter_client.read_input_registers(0x4000, count=2, device_id=METER)
    kwh = meter_client.convert_from_registers(rr.registers, meter_client.DATATYPE.FLOAT32)
    assert isinstance(kwh, float) and kwh > 0
    rig.inject("meter_silence")
    with pytest.raises(ModbusIOException):
        await meter_client.read_input_registers(0x2002, count=2, device_id=METER)


async def test_port_vanishes_and_comes_back(rig: Rig) -> None:
    link = rig.link("control")
    rig.inject("port_vanish", "control")
    assert not link.exists()
    rig.inject("port_vanish", False)
    assert link.exists()
    client = AsyncModbusSerialClient(str(link), baudrate=115200, timeout=0.5, retries=0)
    assert await client.connect()
    try:
        assert (await sample(client))["fw"] == 0x0100
    finally:
        client.close()


async def test_patched_config_points_at_the_links(rig: Rig) -> None:
    data = yaml.safe_load(rig.patched_config_path.read_text())
    assert data["buses"]["control"]["port"] == str(rig.link("control"))
    assert data["state_dir"] == str(rig.state_dir)


async def test_scenario_expectations_measured_on_rig_timestamps(
    rig: Rig, control: AsyncModbusSerialClient
) -> None:
    """The runner's conditions against a client that plays a (fast) agent."""
    scenario = parse_scenario({"steps": [
        {"plug_in": {"cable_a": 16}},
        {"close_s2": {}},
        {"expect": {"contactor": "closed", "within_s": 3, "measure": "close"}},
        {"expect": {"offered_a": 16, "within_s": 1}},
        {"inject": {"s2_open": True}},
        {"expect": {"contactor": "open", "within_ms": 100, "measure": "s2_open_to_open"}},
        {"expect": {"pwm": "on"}},
        {"expect": {"contactor": "open", "hold_s": 0.2}},
    ]})

    async def fake_agent() -> None:
        await until(lambda: rig.ev.s2_closed)
        await control.write_register(DUTY_CMD, 267, device_id=PILOT)
        await control.write_coil(0, True, device_id=RELAY)
        await until(lambda: not rig.ev.s2_closed)
        await control.write_coil(0, False, device_id=RELAY)

    task = asyncio.create_task(fake_agent())
    result = RunResult(scenario)
    await ScenarioRunner(rig).run_steps(scenario, result)
    await task
    checks = {c.name: c for c in result.checks}
    assert all(c.passed for c in result.checks), [(c.name, c.measured) for c in result.checks]
    assert checks["s2_open_to_open"].measured_s is not None
    assert current_from_duty(267) == pytest.approx(16, abs=0.05)


async def test_expectation_fails_when_nothing_happens(rig: Rig) -> None:
    scenario = parse_scenario({"steps": [
        {"plug_in": {}}, {"close_s2": {}},
        {"expect": {"contactor": "closed", "within_ms": 50}},
    ]})
    result = RunResult(scenario)
    await ScenarioRunner(rig).run_steps(scenario, result)
    assert not result.passed
    assert "no contactor_close frame" in result.checks[0].measured
