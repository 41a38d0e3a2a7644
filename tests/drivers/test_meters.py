"""Every meter model round trip: simulated values -> wire -> MeterReading, over a pty."""

from __future__ import annotations

import pytest

from drivers.errors import DriverConfigError, DriverTimeoutError, ModbusExceptionError
from drivers.interfaces import Meter, MeterReading
from drivers.meters import (
    DDSU666,
    DTSU666,
    METER_MODELS,
    SDM120,
    SDM630,
    MapMeter,
    meter_from_config,
    resolve_model,
)
from drivers.registers import Function
from hil.meter_sim import MeterSim
from hil.ptybridge import LineSettings
from tests.drivers.rigs import rig

ONE_PHASE = {"voltage_v": 229.5, "current_a": 15.75, "power_w": 3614.0,
             "energy_import_wh": 123_456.0, "frequency_hz": 49.98, "pf": 0.998}
THREE_PHASE = {"voltage_v": (230.1, 229.8, 231.2), "current_a": (16.0, 15.5, 15.9),
               "power_w": 11_020.0, "energy_import_wh": 98_765.0, "frequency_hz": 50.01,
               "pf": 0.97}


def line_of(sim: MeterSim) -> LineSettings:
    s = sim.model.serial
    return LineSettings(s.baud, s.parity, s.stopbits)


def assert_reading(reading: MeterReading, expected: dict[str, object], phases: int) -> None:
    volts, amps = expected["voltage_v"], expected["current_a"]
    v = volts if isinstance(volts, tuple) else (volts,) * phases
    a = amps if isinstance(amps, tuple) else (amps,) * phases
    assert reading.voltage_v == pytest.approx(v, rel=1e-5)
    assert reading.current_a == pytest.approx(a, rel=1e-5)
    assert reading.power_w == pytest.approx(expected["power_w"], rel=1e-5)
    assert reading.energy_import_wh == pytest.approx(expected["energy_import_wh"], rel=1e-5)
    assert reading.frequency_hz == pytest.approx(expected["frequency_hz"], rel=1e-5)
    assert reading.pf == pytest.approx(expected["pf"], rel=1e-4)


@pytest.mark.parametrize(
    ("model", "values"),
    [(DDSU666, ONE_PHASE), (SDM120, ONE_PHASE), (SDM630, THREE_PHASE), (DTSU666, THREE_PHASE)],
    ids=lambda m: getattr(m, "name", ""),
)
async def test_model_round_trip_at_its_default_line(model: object, values: dict) -> None:
    assert hasattr(model, "register_map")
    sim = MeterSim(model)  # type: ignore[arg-type]
    async with rig([sim.device], line_of(sim), timeout_s=0.5) as r:
        sim.attach(r.sim)
        await sim.set_measurements(**values)
        meter = MapMeter(r.bus, sim.unit, sim.model)
        assert isinstance(meter, Meter)
        reading = await meter.read()
    assert_reading(reading, values, sim.model.phases)
    reads = [a for a in r.sim.accesses if a[0] == sim.unit]
    planned = [(sim.unit, int(b.function), b.address, b.count) for b in meter.plan()]
    assert reads[-len(planned):] == planned  # only the planned blocks went on the wire


async def test_ddsu666_answers_fc03_from_the_same_data() -> None:
    sim = MeterSim(DDSU666)
    async with rig([sim.device], line_of(sim)) as r:
        sim.attach(r.sim)
        await sim.set_measurements(**ONE_PHASE)
        via_fc4 = await MapMeter(r.bus, 1, DDSU666).read()
        via_fc3 = await MapMeter(r.bus, 1, DDSU666, function=Function.HOLDING).read()
    assert via_fc3 == via_fc4
    assert {a[1] for a in r.sim.accesses} == {3, 4}


async def test_dtsu666_applies_ct_ratio_read_at_start_up() -> None:
    sim = MeterSim(DTSU666, ct_ratio=50)
    async with rig([sim.device], line_of(sim)) as r:
        sim.attach(r.sim)
        await sim.set_measurements(**THREE_PHASE)
        # what the wire carries is the secondary side: 16 A / 50 CT = 0.32 A = raw 320
        raw_ia = await r.bus.read(1, 3, 0x200C, 2)
        assert DTSU666.register_map["current_l1"].decode(raw_ia) == pytest.approx(0.32)
        meter = MapMeter(r.bus, 1, DTSU666)
        reading = await meter.read()
    assert meter.ratios["current_l1"] == 50 and meter.ratios["power"] == 50
    assert meter.ratios["voltage_l1"] == 1.0
    assert_reading(reading, THREE_PHASE, 3)


async def test_dtsu666_energy_falls_back_to_0x401e_on_exception_02() -> None:
    sim = MeterSim(DTSU666, ct_ratio=5, pt_ratio=2.0, omit=("energy_import", "energy_export"))
    async with rig([sim.device], line_of(sim)) as r:
        sim.attach(r.sim)
        await sim.set_measurements(**THREE_PHASE)
        meter = MapMeter(r.bus, 1, DTSU666)
        first = await meter.read()
        second = await meter.read()
    assert first == second
    assert first.energy_import_wh == pytest.approx(98_765.0, rel=1e-5)
    addresses = [a[2] for a in r.sim.accesses]
    assert addresses.count(0x101E) == 1  # tried once, then remembered the fallback
    assert addresses.count(0x401E) == 2
    assert r.bus.stats.exceptions == 1


async def test_meter_described_in_config_alone() -> None:
    registers = [
        {"name": "voltage_l1", "address": 0, "function": 4, "type": "u16", "scale": 0.1,
         "unit": "V"},
        {"name": "current_l1", "address": 1, "function": 4, "type": "u16", "scale": 0.01,
         "unit": "A"},
        {"name": "power", "address": 2, "function": 4, "type": "i32", "word_order": "little",
         "unit": "W"},
        {"name": "energy_import", "address": 0x100, "function": 3, "type": "u32", "scale": 0.01,
         "unit": "kWh"},
    ]
    model = resolve_model("acme-em1", registers)
    sim = MeterSim(model, unit=7)
    async with rig([sim.device], LineSettings(19200, "N", 1)) as r:
        sim.attach(r.sim)
        await sim.set_measurements(voltage_v=230.4, current_a=12.34, power_w=-2841.0,
                                   energy_import_wh=4_321_000.0)
        meter = meter_from_config("acme-em1", registers, bus=r.bus, unit=7)
        reading = await meter.read()
    assert reading == MeterReading((230.4,), (12.34,), -2841.0, pytest.approx(4_321_000.0))
    assert {(a[1], a[2]) for a in r.sim.accesses} == {(4, 0), (3, 0x100)}


async def test_long_reads_are_split_into_short_blocks() -> None:
    sim = MeterSim(SDM630)
    async with rig([sim.device], line_of(sim)) as r:
        sim.attach(r.sim)
        await sim.set_measurements(**THREE_PHASE)
        meter = MapMeter(r.bus, 1, SDM630, max_words_per_read=4, max_gap=0)
        reading = await meter.read()
    assert all(count <= 4 for _, _, _, count in r.sim.accesses)
    assert len(r.sim.accesses) == len(meter.plan()) >= 5
    assert_reading(reading, THREE_PHASE, 3)


async def test_meter_faults_silence_exception_frozen() -> None:
    sim = MeterSim(DDSU666)
    async with rig([sim.device], line_of(sim), timeout_s=0.15) as r:
        sim.attach(r.sim)
        await sim.set_measurements(**ONE_PHASE)
        meter = MapMeter(r.bus, 1, DDSU666)
        before = await meter.read()
        sim.freeze()
        await sim.set_measurements(**{**ONE_PHASE, "energy_import_wh": 200_000.0})
        assert await meter.read() == before
        sim.freeze(False)
        sim.set_exception(4)
        with pytest.raises(ModbusExceptionError) as info:
            await meter.read()
        assert info.value.exception_code == 4
        sim.set_exception(None)
        sim.set_silent()
        with pytest.raises(DriverTimeoutError):
            await meter.read()
        sim.set_silent(False)
        await sim.set_measurements(**{**ONE_PHASE, "energy_import_wh": 200_000.0})
        assert (await meter.read()).energy_import_wh == pytest.approx(200_000.0)
    assert r.bus.stats.timeouts == 1


def test_registry_and_config_errors() -> None:
    assert set(METER_MODELS) == {"ddsu666", "dtsu666", "sdm120", "sdm630"}
    assert resolve_model("DDSU666") is DDSU666
    assert METER_MODELS["sdm120"].serial.baud == 2400
    with pytest.raises(DriverConfigError, match="unknown meter model"):
        resolve_model("nope")
    with pytest.raises(DriverConfigError, match="lacks"):
        resolve_model("x", [{"name": "voltage_l1", "address": 0, "function": 4}])
    with pytest.raises(DriverConfigError, match="unknown quantity"):
        resolve_model("x", [{"name": "volts", "address": 0}])
    with pytest.raises(DriverConfigError, match="unit"):
        resolve_model("x", [{"name": "power", "address": 0, "unit": "kWh"}])
    with pytest.raises(DriverConfigError, match="function"):
        resolve_model("x", [{"name": "power", "address": 0, "function": 2}])
