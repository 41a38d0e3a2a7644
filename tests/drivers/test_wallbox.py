"""The wallbox driver against the simulated wallbox over a real pty, pymodbus on both ends."""

from __future__ import annotations

import time

import pytest

from agent.wallbox.mapping import command_for
from drivers.errors import DriverError
from drivers.interfaces import Wallbox
from drivers.wallbox import EVSE_WB_DIN, HEIDELBERG, PHOENIX_EV_CC, WallboxProfile
from drivers.wallbox.driver import WallboxDriver
from drivers.wallbox.profiles import WallboxCommand
from hil.poll import wait_until
from hil.ptybridge import LineSettings
from hil.wallbox_sim import WallboxQuirks, WallboxSim
from tests.drivers.rigs import rig

# The pty carries no parity (hil.simrig_wallbox): the bridge keeps each profile's line timing.
LINES = {"heidelberg": LineSettings(19200, "N", 1), "phoenix-ev-cc": LineSettings(9600),
         "evse-wb-din": LineSettings(9600)}


def _sim(profile: WallboxProfile, **kw: object) -> WallboxSim:
    return WallboxSim(profile, unit=1, clock=time.monotonic, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("profile", [HEIDELBERG, PHOENIX_EV_CC, EVSE_WB_DIN],
                         ids=lambda p: p.name)
async def test_state_letters_and_current_round_trip(profile: WallboxProfile) -> None:
    sim = _sim(profile)
    async with rig([sim.sim_device()], LINES[profile.name], timeout_s=0.3) as r:
        drv = WallboxDriver(r.bus, 1, profile, watchdog_s=5.0, failsafe_a=6.0)
        assert isinstance(drv, Wallbox)
        await drv.program()
        for letter in ("A", "B", "C"):
            sim.set_vehicle(time.monotonic(), letter)
            value = await drv.read_state()
            assert profile.states[value] == letter
        command = command_for(profile, 10.37, 32.0)
        await drv.apply(command)
        assert sim.commanded_a() == pytest.approx(10.3 if profile is HEIDELBERG else 10.0)
        await drv.apply(WallboxCommand(0, False))  # the disable path, never an illegal current
        assert sim.commanded_a() == 0.0
        await drv.apply(command)
        assert sim.commanded_a() > 0
        assert await drv.verify() == []


async def test_heidelberg_programs_watchdog_failsafe_and_standby() -> None:
    sim = _sim(HEIDELBERG)
    async with rig([sim.sim_device()], LINES["heidelberg"], timeout_s=0.3) as r:
        drv = WallboxDriver(r.bus, 1, HEIDELBERG, watchdog_s=2.5, failsafe_a=8.04)
        await drv.program()
        assert sim.memory["standby"] == 4
        assert sim.memory["watchdog_timeout"] == 2500
        assert sim.memory["failsafe_current"] == 80  # rounded down to 0.1 A
        await drv.apply(command_for(HEIDELBERG, 16.0, 32.0))
        sim.reset(time.monotonic())  # back with its defaults
        changed = await drv.verify()
        assert {"standby", "watchdog_timeout", "failsafe_current"} <= set(changed)
        await drv.program()
        assert await drv.verify() == []
        assert sim.memory["max_current"] == 160


async def test_heidelberg_energy_and_currents() -> None:
    sim = _sim(HEIDELBERG, energy_wh=123_456.0, current_draw_a=10.2, phases=3)
    async with rig([sim.sim_device()], LINES["heidelberg"], timeout_s=0.3) as r:
        reading = await WallboxDriver(r.bus, 1, HEIDELBERG, phases=3).read_meter()
        assert reading is not None
        assert reading.energy_import_wh == 123_456.0
        assert reading.current_a == pytest.approx((10.2, 10.2, 10.2))
        assert reading.voltage_v == (230.0, 230.0, 230.0)


async def test_heidelberg_standby_sleeps_unless_disabled() -> None:
    sim = _sim(HEIDELBERG, quirks=WallboxQuirks(standby_sleep_s=0.05))
    async with rig([sim.sim_device()], LINES["heidelberg"], timeout_s=0.1) as r:
        drv = WallboxDriver(r.bus, 1, HEIDELBERG)
        sim.set_vehicle(time.monotonic(), "B")
        sim.set_vehicle(time.monotonic(), "A")
        await wait_until(lambda: sim.vehicle == "A")
        time.sleep(0.06)  # noqa: ASYNC251 (the wallbox falls asleep)
        with pytest.raises(DriverError):
            await drv.read_state()
        sim.set_vehicle(time.monotonic(), "B")  # a vehicle wakes it; then standby goes off
        await drv.program()
        sim.set_vehicle(time.monotonic(), "A")
        time.sleep(0.06)  # noqa: ASYNC251
        assert HEIDELBERG.states[await drv.read_state()] == "A"


async def test_evse_wb_din_gap_is_kept_by_the_driver() -> None:
    sim = _sim(EVSE_WB_DIN)
    async with rig([sim.sim_device()], LINES["evse-wb-din"], timeout_s=0.3) as r:
        drv = WallboxDriver(r.bus, 1, EVSE_WB_DIN)
        for _ in range(3):  # back to back: the wallbox would not answer inside its gap
            assert EVSE_WB_DIN.states[await drv.read_state()] == "A"
        assert r.bus.stats.timeouts == 0


async def test_phoenix_out_of_table_letter_and_exception() -> None:
    sim = _sim(PHOENIX_EV_CC, state_override=ord("G"))
    async with rig([sim.sim_device()], LINES["phoenix-ev-cc"], timeout_s=0.3) as r:
        drv = WallboxDriver(r.bus, 1, PHOENIX_EV_CC)
        value = await drv.read_state()
        assert value == ord("G") and value not in PHOENIX_EV_CC.states
        r.sim.set_exception(1, 4)
        with pytest.raises(DriverError):
            await drv.read_state()


async def test_late_answer_is_dropped_not_taken_for_the_next() -> None:
    sim = _sim(HEIDELBERG)
    async with rig([sim.sim_device()], LINES["heidelberg"], timeout_s=0.1,
                   device_latency_s=0.2) as r:
        drv = WallboxDriver(r.bus, 1, HEIDELBERG)
        r.sim.set_latency(1, 0.15)
        with pytest.raises(DriverError):
            await drv.read_state()
        r.sim.set_latency(1, 0.0)
        sim.set_vehicle(time.monotonic(), "C")
        assert HEIDELBERG.states[await drv.read_state()] == "C"
