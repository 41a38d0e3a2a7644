"""Idle polls: the slow periods only where nothing with a reaction limit can happen."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import parse_config
from agent.errors import ConfigError
from agent.pilot import PilotState
from agent.shell.pollrate import pilot_idle, relay_idle
from hil.bench.common import default_config_data
from tests.unit.test_pilot_rig import Rig


def idle(rig: Rig) -> bool:
    return pilot_idle(rig.m, read_ok=True, write_pending=False)


def test_no_vehicle_settled_is_idle_and_a_plug_in_is_not() -> None:
    rig = Rig()
    rig.run(0.1)
    assert rig.m.state is PilotState.IDLE and idle(rig)
    assert relay_idle(rig.m, read_ok=True, open_pending=False)
    rig.ev.cp = "2"
    rig.feed(rig.pilot_event())  # the first sample of the plug-in: mid-debounce
    assert rig.m.state is PilotState.IDLE and not rig.m.level_settled and not idle(rig)
    rig.run(0.05)
    assert rig.m.state is not PilotState.IDLE and not idle(rig)


def test_a_failed_read_or_a_pending_write_keeps_the_fast_poll() -> None:
    rig = Rig()
    rig.run(0.1)
    assert not pilot_idle(rig.m, read_ok=False, write_pending=False)
    assert not pilot_idle(rig.m, read_ok=True, write_pending=True)
    assert not relay_idle(rig.m, read_ok=False, open_pending=False)
    assert not relay_idle(rig.m, read_ok=True, open_pending=True)


def test_charging_is_never_idle_and_the_relay_is_idle_only_once_open_is_confirmed() -> None:
    rig = Rig()
    rig.plug("2", 0.5)
    rig.plug("3", 1.0)
    assert rig.m.contactor_commanded and rig.contact_closed
    assert not idle(rig) and not relay_idle(rig.m, read_ok=True, open_pending=False)
    rig.ev.cp = "2"  # S2 opens: the contactor opens
    rig.feed(rig.pilot_event())
    rig.feed(rig.pilot_event())
    assert not rig.m.contactor_commanded and not rig.m.contactor_confirmed
    assert not relay_idle(rig.m, read_ok=True, open_pending=False)
    rig.run(0.1)
    assert rig.m.contactor_confirmed and relay_idle(rig.m, read_ok=True, open_pending=False)
    assert not idle(rig)  # PWM still on in 2': an unplug must stop it within 100 ms


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["1", "2", "3", "short", "invalid"]), min_size=1, max_size=30))
def test_idle_only_with_the_contactor_open_and_steady_plus_12v(cps: list[str]) -> None:
    rig = Rig()
    for cp in cps:
        rig.ev.cp = cp
        rig.run(0.03)
        if idle(rig):
            assert not rig.m.contactor_commanded and not rig.contact_closed
            assert not rig.pwm and rig.m.ev_level is not None and rig.ev.cp == "1"
        if relay_idle(rig.m, read_ok=True, open_pending=False):
            assert not rig.m.contactor_commanded and not rig.contact_closed


def _with(pilot: dict[str, float], relay: dict[str, float] | None = None) -> None:
    data = default_config_data()
    data["connectors"][0]["pilot_board"].update(pilot)
    data["connectors"][0]["relay_board"].update(relay or {})
    parse_config(data, source="test")


def test_config_bounds_the_idle_periods_by_the_liveness_checks() -> None:
    _with({"idle_poll_ms": 40})
    with pytest.raises(ConfigError, match=r"half of safety\.pilot_lost_ms"):
        _with({"idle_poll_ms": 50})
    with pytest.raises(ConfigError, match="below poll_ms"):
        _with({"poll_ms": 20, "idle_poll_ms": 10})
    with pytest.raises(ConfigError, match=r"half of safety\.relay_lost_ms"):
        _with({}, {"idle_poll_ms": 600})
