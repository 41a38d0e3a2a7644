"""The wallbox core: state mapping, current rounding (never above the composite), sessions."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from agent.faults import FaultCode
from agent.pilot import (
    Authorize,
    FaultCleared,
    FaultRaised,
    LimitChanged,
    PilotState,
    SessionEvent,
    StopRequested,
    Tick,
)
from agent.pilot.classifier import CpLevel
from agent.wallbox.machine import (
    WallboxMachine,
    WallboxReadFailed,
    WallboxSampled,
    WallboxSettings,
    WriteCommand,
)
from agent.wallbox.mapping import (
    DISABLED,
    amps_from_watts,
    command_amps,
    command_for,
    vehicle_state,
    watts_from_amps,
)
from drivers.wallbox import EVSE_WB_DIN, HEIDELBERG, PHOENIX_EV_CC, PROFILES

profiles = st.sampled_from(sorted(PROFILES.values(), key=lambda p: p.name))
limits = st.one_of(st.none(), st.floats(min_value=0, max_value=100, allow_nan=False))


@given(profiles, limits, st.floats(min_value=6, max_value=80))
def test_register_value_never_above_the_composite(profile, limit, rated) -> None:  # type: ignore[no-untyped-def]
    cmd = command_for(profile, limit, rated)
    offered = Fraction(cmd.raw) * Fraction(str(profile.current.scale))
    if not cmd.enabled:
        assert cmd.raw == 0
        return
    assert limit is None or offered <= Fraction(limit)
    assert offered <= Fraction(profile.max_current_a) and offered <= Fraction(rated)
    assert offered >= Fraction(str(profile.min_current_a))
    # rounded down to the step, not further: one step more would exceed the composite/range
    step = Fraction(str(profile.current.scale))
    ceiling = min(Fraction(profile.max_current_a), Fraction(rated))
    assert offered + step > (ceiling if limit is None else min(Fraction(limit), ceiling))


@given(profiles, st.floats(min_value=0, max_value=5.999))
def test_below_the_minimum_is_the_disable_path(profile, limit) -> None:  # type: ignore[no-untyped-def]
    assert command_for(profile, limit, 32.0) == DISABLED


def test_heidelberg_tenths_and_range() -> None:
    assert command_for(HEIDELBERG, 10.37, 32.0).raw == 103
    assert command_for(HEIDELBERG, 10.3, 32.0).raw == 103
    assert command_for(HEIDELBERG, 40.0, 32.0).raw == 160  # 16 A is its maximum
    assert command_for(HEIDELBERG, None, 10.0).raw == 100  # the connector's rating caps it
    assert command_amps(HEIDELBERG, command_for(HEIDELBERG, 6.0, 32.0)) == 6.0
    assert command_for(PHOENIX_EV_CC, 10.9, 32.0).raw == 10


def test_watts_and_amps_with_phases() -> None:
    assert amps_from_watts(11_040, 3, 230.0) == 16.0
    assert watts_from_amps(16.0, 1, 230.0) == 3680.0


def test_state_tables() -> None:
    assert vehicle_state(HEIDELBERG, 7).value == "C"  # type: ignore[union-attr]
    assert vehicle_state(HEIDELBERG, 11).value == "error"  # type: ignore[union-attr]
    assert vehicle_state(HEIDELBERG, 12) is None
    assert vehicle_state(PHOENIX_EV_CC, ord("B")).value == "B"  # type: ignore[union-attr]
    assert vehicle_state(EVSE_WB_DIN, 0) is None


def _machine(**kw: object) -> WallboxMachine:
    return WallboxMachine(WallboxSettings(HEIDELBERG, 32.0, **kw))  # type: ignore[arg-type]


def _writes(step) -> list[WriteCommand]:  # type: ignore[no-untyped-def]
    return [a for a in step.actions if isinstance(a, WriteCommand)]


def test_session_charge_curtail_pause_unplug() -> None:
    m = _machine()
    assert m.step(LimitChanged(0.0), 0.0).actions == ()  # as the services start it: paused
    m.step(WallboxSampled(2), 0.0)
    assert m.ev_level is CpLevel.STATE_1 and m.state is PilotState.IDLE
    s = m.step(LimitChanged(16.0), 0.1)
    assert _writes(s) == [WriteCommand(command_for(HEIDELBERG, 16.0, 32.0))]
    s = m.step(WallboxSampled(5), 0.2)
    assert SessionEvent("plugged") in s.actions and m.state is PilotState.OFFERING
    s = m.step(WallboxSampled(7), 0.3)
    assert m.state is PilotState.CHARGING and m.contactor_commanded
    assert any(isinstance(a, SessionEvent) and a.kind == "charging_started" for a in s.actions)
    s = m.step(LimitChanged(8.0), 0.4)
    assert isinstance(s.actions[0], WriteCommand) and s.actions[0].command.raw == 80
    assert m.offered_current_a == 8.0
    s = m.step(LimitChanged(4.0), 0.5)  # below 6 A: the disable path, charging stops
    assert s.actions[0] == WriteCommand(DISABLED)
    assert m.state is PilotState.CONNECTED and not m.contactor_commanded
    m.step(LimitChanged(10.0), 0.6)
    assert m.state is PilotState.CHARGING
    s = m.step(WallboxSampled(3), 0.7)
    assert SessionEvent("unplugged") in s.actions and m.state is PilotState.IDLE


def test_out_of_table_state_is_a_fault_with_the_raw_value() -> None:
    m = _machine()
    m.step(LimitChanged(16.0), 0.0)
    m.step(WallboxSampled(7), 0.1)
    s = m.step(WallboxSampled(42), 0.2)
    raised = [a for a in s.actions if isinstance(a, FaultRaised)]
    assert raised and raised[0].code is FaultCode.WALLBOX_STATE_INVALID
    assert "42" in raised[0].detail
    assert s.actions[0] == WriteCommand(DISABLED) and m.state is PilotState.FAULT
    s = m.step(WallboxSampled(7), 0.3)
    assert FaultCleared(FaultCode.WALLBOX_STATE_INVALID) in s.actions
    assert m.state is PilotState.CHARGING


def test_error_state_and_lost_wallbox() -> None:
    m = _machine(lost_s=1.0)
    m.step(LimitChanged(16.0), 0.0)
    s = m.step(WallboxSampled(11), 0.1)
    assert any(isinstance(a, FaultRaised) and a.code is FaultCode.WALLBOX_FAULT
               for a in s.actions)
    m.step(WallboxSampled(4), 0.2)
    assert not m.active_faults
    m.step(WallboxReadFailed(), 0.9)
    assert not m.active_faults
    s = m.step(Tick(), 1.3)
    assert m.active_faults == {FaultCode.WALLBOX_LOST}
    m.step(WallboxSampled(4), 1.5)
    assert not m.active_faults and m.command.enabled


def test_remote_authorisation_and_stop() -> None:
    m = _machine(authorisation="remote")
    m.step(LimitChanged(16.0), 0.0)
    m.step(WallboxSampled(2), 0.1)
    m.step(WallboxSampled(6), 0.2)
    assert not m.command.enabled and m.state is PilotState.CONNECTED
    m.step(Authorize("tag-1"), 0.3)
    assert m.state is PilotState.CHARGING
    s = m.step(StopRequested("Remote"), 0.4)
    stopped = [a for a in s.actions if isinstance(a, SessionEvent) and a.kind ==
               "charging_stopped"]
    assert stopped == [SessionEvent("charging_stopped", "Remote")]
    assert not m.command.enabled


events = st.lists(st.one_of(
    st.builds(LimitChanged, limits),
    st.builds(WallboxSampled, st.integers(min_value=0, max_value=14)),
    st.just(WallboxReadFailed()), st.just(Tick()), st.just(Authorize()),
    st.just(StopRequested("x"))), max_size=40)


@given(profiles, events, st.sampled_from(["auto", "remote"]))
def test_machine_never_commands_above_the_composite_or_while_faulted(  # type: ignore[no-untyped-def]
        profile, seq, auth) -> None:
    m = WallboxMachine(WallboxSettings(profile, 32.0, auth, lost_s=2.0))
    limit: float | None = None
    for i, event in enumerate(seq):
        if isinstance(event, LimitChanged):
            limit = event.limit_a
        m.step(event, i * 0.5)
        amps = command_amps(profile, m.command)
        if limit is not None:
            assert amps <= limit
        assert amps <= min(profile.max_current_a, 32.0)
        if m.active_faults:
            assert not m.command.enabled and m.state is PilotState.FAULT
        assert m.contactor_commanded == (m.state is PilotState.CHARGING)
