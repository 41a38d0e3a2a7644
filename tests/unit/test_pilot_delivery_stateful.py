"""Hypothesis stateful tests of the machine *with* its delivery rules, on boards that fail.

``DeliveryRig`` is the checked rig of test_pilot_stateful (every machine step is still checked
against (a)-(d) there) whose writes go through ``agent.pilot.delivery`` the way the shell
applies them: in order, a failed one fed back as ``ActionFailed``. Injections on top of the
rig's: relay writes fail, pilot writes fail, the board takes a duty write without applying
it, the meter freezes. Checked here:

(e) the coil is closed only while the machine commands it closed or an open is owed to the
    relay board (R1): a failed open is never forgotten;
(f) after any sequence of failures, once the buses work again and the vehicle leaves, the
    contactor ends open and the pilot line at steady +12 V (no charging), as commanded;
(g) a frozen meter under load is never fed to the machine as a good reading (R5);
(h) a duty the board took without applying is written again once the board answers (R3).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from test_pilot_stateful import BITS, CheckedRig

from agent.faults import FaultCode
from agent.pilot import (
    Authorize,
    LimitChanged,
    MeterSampled,
    PilotSettings,
    ResetBoardFaults,
    ResetRequested,
    SetContactor,
    SetDuty,
    SetLock,
    Step,
    StopRequested,
    Tick,
)
from agent.pilot.delivery import (
    METER_FROZEN_READS,
    ActionFailed,
    Delivered,
    Delivery,
    Heartbeat,
    HeartbeatDue,
    Input,
    MeterRead,
    Output,
    Resend,
)

WRITES = (SetContactor, SetDuty, SetLock, ResetBoardFaults, Heartbeat, Resend)


class _CheckedMachine:
    """The rig's machine as Delivery sees it: each step runs CheckedRig's checks."""

    def __init__(self, rig: DeliveryRig) -> None:
        self._rig = rig

    def step(self, event: Any, now: float) -> Step:
        return self._rig.checked_step(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rig.m, name)


class DeliveryRig(CheckedRig):
    def __post_init__(self) -> None:
        self._inside = False
        self._same_reads = 0
        super().__post_init__()
        self.d = Delivery(_CheckedMachine(self))  # type: ignore[arg-type]
        self.relay_writes_fail = False
        self.pilot_writes_fail = False
        self.duty_ignored = False  # the board acknowledges a duty write but keeps its duty
        self.meter_frozen = False
        self.heartbeats = 0
        self._last_read: MeterRead | None = None
        self.frozen_fed_good = 0  # (g): good readings the machine got while frozen under load

    def checked_step(self, event: Any) -> Step:
        self._inside = True  # the machine's actions are applied by pump(), not by Rig.apply
        try:
            if isinstance(event, MeterSampled) and self._frozen_under_load():
                self.frozen_fed_good += 1
            return CheckedRig.feed(self, event)
        finally:
            self._inside = False

    def _frozen_under_load(self) -> bool:
        last = self._last_read
        return (self.meter_frozen and last is not None and max(last.current_a) > 1.0
                and self._same_reads > METER_FROZEN_READS)

    def apply(self, actions: tuple[Any, ...]) -> None:
        if not self._inside:
            super().apply(actions)

    def feed(self, event: Input) -> Delivered:  # type: ignore[override]
        if isinstance(event, MeterSampled):
            event = self._meter(event)
        out = self.d.step(event, self.now)
        self.pump(out.actions)
        return out

    def _meter(self, event: MeterSampled) -> MeterRead:
        if self.meter_frozen and self._last_read is not None:
            self._same_reads += 1
            return self._last_read
        self._same_reads = 1
        self._last_read = MeterRead(event.current_a, (230.0, self.now))  # real ones jitter
        return self._last_read

    def pump(self, actions: tuple[Output, ...]) -> None:
        for a in actions:
            if not isinstance(a, WRITES):
                continue
            inner = a.action if isinstance(a, Resend) else a
            relay = isinstance(inner, SetContactor | SetLock)
            if self.relay_writes_fail if relay else self.pilot_writes_fail:
                self.pump(self.d.step(ActionFailed(a), self.now).actions)
            elif isinstance(inner, Heartbeat):
                self.heartbeats += 1
            elif not (isinstance(inner, SetDuty) and self.duty_ignored):
                super().apply((inner,))

    def heal(self) -> None:
        self.relay_writes_fail = self.pilot_writes_fail = self.duty_ignored = False
        self.meter_frozen = self.pilot_silent = self.relay_silent = self.meter_silent = False
        self.status_cause = 0  # latched bits go with the machine's next board reset


class DeliverySafety(RuleBasedStateMachine):
    rig: DeliveryRig

    @initialize(connection=st.sampled_from(["socket", "cable"]), precharge=st.booleans())
    def setup(self, connection: str, precharge: bool) -> None:
        self.rig = DeliveryRig(PilotSettings(
            connection=connection,  # type: ignore[arg-type]
            cable_rating_a=32.0 if connection == "cable" else None,
            min_off_s=5.0, meter_grace_s=3.0))
        if precharge:  # half of the runs start charging: failures then hit a closed contactor
            self.rig.ev.cp = "3"
            self.rig.run(0.5)

    @rule(cp=st.sampled_from(["1", "2", "3", "3", "D", "short"]), polls=st.integers(1, 60))
    def vehicle(self, cp: str, polls: int) -> None:
        self.rig.ev.cp = cp
        self.rig.run(0.01 * polls)

    @rule(
        name=st.sampled_from(
            ["relay_writes_fail", "pilot_writes_fail", "duty_ignored", "meter_frozen",
             "relay_silent", "pilot_silent", "weld", "no_close"]),
        on=st.booleans(),
    )
    def injection(self, name: str, on: bool) -> None:
        setattr(self.rig, name, on)

    @rule(bit=BITS, on=st.booleans())
    def board_cause(self, bit: int, on: bool) -> None:
        self.rig.set_cause(bit, on)

    @rule(event=st.sampled_from([StopRequested("stop"), Authorize("tag"), ResetRequested(),
                                 LimitChanged(8.0), LimitChanged(None), Tick()]))
    def command(self, event: Any) -> None:
        self.rig.feed(event)

    @rule()
    def heartbeat(self) -> None:
        self.rig.feed(HeartbeatDue())

    @rule(seconds=st.sampled_from([0.3, 1.0, 4.0]))
    def wait(self, seconds: float) -> None:
        self.rig.run(seconds, dt=0.01, meter_every=0.2)

    @rule(
        writes=st.sampled_from(["relay_writes_fail", "pilot_writes_fail", "both"]),
        cause=st.sampled_from(["stop", "unplug", "s2", "estop", "limit"]),
        polls=st.integers(1, 40),
    )
    def failure_while_charging(self, writes: str, cause: str, polls: int) -> None:
        r = self.rig
        r.ev.cp = "3"
        r.run(0.4)
        for name in ("relay_writes_fail", "pilot_writes_fail"):
            setattr(r, name, writes in (name, "both") or getattr(r, name))
        if cause == "stop":
            r.feed(StopRequested("stop"))
        elif cause == "limit":
            r.feed(LimitChanged(0.0))
        elif cause == "estop":
            r.set_cause(1 << 3)
        else:
            r.ev.cp = "1" if cause == "unplug" else "2"
        r.run(0.01 * polls)

    @rule(amps=st.sampled_from([6.0, 8.0, 13.0, None]))
    def duty_taken_late(self, amps: float | None) -> None:  # (h)
        r = self.rig
        r.duty_ignored = True
        r.feed(LimitChanged(amps))
        r.run(0.1)
        r.duty_ignored = r.pilot_writes_fail = r.pilot_silent = False
        r.run(0.5)
        if not r.status & (1 << 4):  # FAILSAFE: the board's own watchdog holds the line
            assert r.duty == r.m.duty_commanded, "the board outputs the commanded duty again"

    @rule()
    def meter_freezes_while_charging(self) -> None:  # (g)
        r = self.rig
        r.ev.cp = "3"
        r.meter_frozen = True
        r.run(3.0, meter_every=0.2)

    @rule()
    def heal_and_leave(self) -> None:  # (f)
        r = self.rig
        r.heal()
        r.ev.cp = "1"
        r.run(2.5)  # a board reset (each 1 s) plus DUTY_MISMATCH_POLLS
        assert not r.coil, "the contactor ends open"
        assert r.duty == 1000 == r.m.duty_commanded, "the pilot ends at steady +12 V"
        assert not r.d.open_pending and not r.d.duty_pending

    @invariant()
    def failed_open_is_owed(self) -> None:  # (e)
        r = getattr(self, "rig", None)
        if r is not None:
            assert not r.coil or r.m.contactor_commanded or r.d.open_pending

    @invariant()
    def frozen_meter_is_not_believed(self) -> None:  # (g)
        r = getattr(self, "rig", None)
        if r is not None:
            assert r.frozen_fed_good == 0
            assert FaultCode.INTERNAL_ERROR not in r.m.active_faults


TestDeliverySafety = DeliverySafety.TestCase
TestDeliverySafety.settings = settings(
    max_examples=120, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
