"""The delivery rules (agent.pilot.delivery, R1-R6), one table-like test each, no I/O.

``DeliveryRig`` (test_pilot_delivery_stateful) plays boards whose writes can fail; here the
rules are driven input by input, so each test shows exactly what the core answers.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.faults import FaultCode
from agent.pilot import (
    BoardStatus,
    MeterReadFailed,
    MeterSampled,
    PilotMachine,
    PilotSampled,
    PilotSettings,
    RelaySampled,
    SetContactor,
    SetDuty,
)
from agent.pilot.delivery import (
    DUTY_MISMATCH_POLLS,
    METER_FROZEN_READS,
    OPEN_RETRIES,
    ActionFailed,
    Delivery,
    DutyMismatch,
    EvLevelChanged,
    FeedbackChanged,
    Heartbeat,
    HeartbeatDue,
    MeterFrozen,
    MeterRead,
    Resend,
)
from drivers.board_maps import PilotStatus

OPEN = SetContactor(False)


def sample(seq: int, duty: int = 1000, status: int = 0, cp: int = 9000) -> PilotSampled:
    return PilotSampled(cp, -12000 if duty != 1000 else cp, duty, 680, BoardStatus(status), seq,
                        25.0)


def exhaust_open_retries(d: Delivery, now: float) -> None:
    """The open and each of its retries fail: the open is left pending for the board."""
    for attempt in range(OPEN_RETRIES + 1):
        d.step(ActionFailed(Resend(OPEN, "retry", attempt) if attempt else OPEN), now)


def test_board_status_flags_are_the_drivers_own_flag_set() -> None:
    assert BoardStatus is PilotStatus  # one definition, not a copy kept equal by a test


def test_r1_a_failed_open_is_retried_then_resent_when_the_relay_board_answers() -> None:
    d = Delivery(PilotMachine(PilotSettings()))
    answers = [d.step(ActionFailed(OPEN), 1.0).actions]
    for attempt in range(1, OPEN_RETRIES + 1):
        answers.append(d.step(ActionFailed(Resend(OPEN, "retry", attempt)), 1.0).actions)
    assert answers == [(Resend(OPEN, "retry", n),) for n in range(1, OPEN_RETRIES + 1)] + [()]
    assert d.open_pending
    out = d.step(RelaySampled(True, False), 1.1).actions
    assert out[0] == Resend(OPEN, "board_back", OPEN_RETRIES), "the re-sent open comes first"
    assert not d.open_pending


def test_r1_a_resend_that_fails_waits_for_the_board_again() -> None:
    d = Delivery(PilotMachine(PilotSettings()))
    exhaust_open_retries(d, 1.0)
    resend = d.step(RelaySampled(True, False), 1.1).actions[0]
    assert d.step(ActionFailed(resend), 1.1).actions == ()
    assert d.open_pending
    assert d.step(RelaySampled(True, False), 1.2).actions[0] == resend


def test_r2_the_mirror_contact_is_not_judged_right_after_a_late_open() -> None:
    s = PilotSettings()
    d = Delivery(PilotMachine(s))
    d.step(RelaySampled(False, False), 0.0)
    exhaust_open_retries(d, 1.0)
    d.step(RelaySampled(True, False), 2.0)  # the open goes out now: contacts still closed
    d.step(RelaySampled(True, False), 2.01)  # the next input: the re-send was delivered
    held = d.step(RelaySampled(True, False), 2.01 + s.contactor_feedback_timeout_s / 2)
    assert held.actions == ()
    assert FaultCode.CONTACTOR_WELDED not in d.machine.active_faults
    after = d.step(RelaySampled(True, False), 2.01 + s.contactor_feedback_timeout_s)
    assert FeedbackChanged(True) in after.actions
    assert FaultCode.CONTACTOR_WELDED in d.machine.active_faults  # still closed: now judged


def test_r2_a_resend_delivered_late_by_the_bus_is_timed_from_its_delivery() -> None:
    """port_vanish: the re-send went out when the board answered again, but the bus took its
    own retries to deliver it; the first sample after it still shows the contacts closed (they
    only just got the open). Timed from the re-send, that was a false CONTACTOR_WELDED."""
    s = PilotSettings()
    d = Delivery(PilotMachine(s))
    d.step(RelaySampled(False, False), 0.0)
    exhaust_open_retries(d, 1.0)
    assert d.step(RelaySampled(True, False), 2.0).actions[0] == Resend(OPEN, "board_back",
                                                                       OPEN_RETRIES)
    late = 2.0 + 2 * s.contactor_feedback_timeout_s  # the write returned only now
    assert d.step(RelaySampled(True, False), late).actions == ()
    d.step(RelaySampled(False, False), late + 0.05)  # the contacts followed the open
    assert FaultCode.CONTACTOR_WELDED not in d.machine.active_faults
    assert not d.machine.contactor_commanded


def test_r2_a_retry_delivered_late_is_not_judged_either() -> None:
    s = PilotSettings()
    d = Delivery(PilotMachine(s))
    d.step(RelaySampled(False, False), 0.0)
    assert d.step(ActionFailed(OPEN), 0.0).actions == (Resend(OPEN, "retry", 1),)  # succeeds
    late = 2 * s.contactor_feedback_timeout_s  # after the bus's own retries
    d.step(RelaySampled(True, False), late)
    assert FaultCode.CONTACTOR_WELDED not in d.machine.active_faults
    d.step(RelaySampled(True, False), late + s.contactor_feedback_timeout_s)  # a real weld
    assert FaultCode.CONTACTOR_WELDED in d.machine.active_faults


def test_r2_an_open_that_never_reached_the_board_is_never_judged() -> None:
    s = PilotSettings()
    d = Delivery(PilotMachine(s))
    d.step(RelaySampled(False, False), 0.0)
    exhaust_open_retries(d, 0.0)
    for n in range(1, 6):  # the board answers reads, each re-send times out
        resend = d.step(RelaySampled(True, False), n * 1.0).actions[0]
        assert resend == Resend(OPEN, "board_back", OPEN_RETRIES)
        assert d.step(ActionFailed(resend), n * 1.0).actions == ()
    assert FaultCode.CONTACTOR_WELDED not in d.machine.active_faults
    assert d.open_pending and not d.machine.contactor_commanded  # still trying to open


def test_r3_a_failed_duty_write_is_resent_with_the_duty_commanded_now() -> None:
    d = Delivery(PilotMachine(PilotSettings()))
    assert d.step(ActionFailed(SetDuty(533)), 1.0).actions == ()
    out = d.step(sample(1), 1.01).actions
    assert out[-1] == Resend(SetDuty(d.machine.duty_commanded), "board_back")
    assert not d.duty_pending


def test_r3_a_board_outputting_another_duty_gets_it_again() -> None:
    d = Delivery(PilotMachine(PilotSettings()))
    outs = [d.step(sample(i, duty=533, cp=12000), i * 0.01).actions
            for i in range(1, DUTY_MISMATCH_POLLS + 1)]
    assert all(DutyMismatch(533, 1000) not in o for o in outs[:-1])
    assert outs[-1][-2:] == (DutyMismatch(533, 1000), Resend(SetDuty(1000), "duty_mismatch"))


def test_r3_no_resend_while_the_boards_watchdog_holds_the_line() -> None:
    d = Delivery(PilotMachine(PilotSettings()))
    failsafe = int(BoardStatus.FAILSAFE)
    for i in range(1, 3 * DUTY_MISMATCH_POLLS):
        out = d.step(sample(i, duty=533, status=failsafe, cp=12000), i * 0.01).actions
        assert not any(isinstance(a, Resend | DutyMismatch) for a in out)


def test_r4_the_heartbeat_waits_while_a_duty_is_owed() -> None:
    d = Delivery(PilotMachine(PilotSettings()))
    assert d.step(HeartbeatDue(), 1.0).actions == (Heartbeat(),)
    d.step(ActionFailed(SetDuty(533)), 1.0)
    assert d.step(HeartbeatDue(), 2.0).actions == (Resend(SetDuty(1000), "board_back"),)
    assert d.step(HeartbeatDue(), 3.0).actions == (Heartbeat(),)


def test_r5_identical_readings_under_load_count_as_failed_reads() -> None:
    d = Delivery(PilotMachine(PilotSettings()))
    fed: list[object] = []
    real = d.machine.step
    d.machine.step = lambda event, now: (fed.append(event), real(event, now))[1]  # type: ignore[method-assign]
    same = MeterRead((10.0,), (230.0, 2300.0, 1234.0))
    outs = [d.step(same, float(i)).actions for i in range(METER_FROZEN_READS + 2)]
    assert fed[:METER_FROZEN_READS] == [MeterSampled((10.0,))] * METER_FROZEN_READS
    assert fed[METER_FROZEN_READS:] == [MeterReadFailed()] * 2
    assert [o for o in outs if MeterFrozen(METER_FROZEN_READS) in o] == [outs[METER_FROZEN_READS]]
    d.step(MeterRead((10.0,), (230.0, 2300.0, 1234.5)), 20.0)  # it moves again
    assert fed[-1] == MeterSampled((10.0,))


def test_r5_an_idle_meter_may_repeat_itself() -> None:
    d = Delivery(PilotMachine(PilotSettings()))
    idle = MeterRead((0.2,), (230.0, 0.0, 1234.0))
    for i in range(3 * METER_FROZEN_READS):
        assert not any(isinstance(a, MeterFrozen) for a in d.step(idle, float(i)).actions)


def test_r6_level_and_feedback_changes_are_noted_once() -> None:
    d = Delivery(PilotMachine(PilotSettings(debounce_samples=1)))
    first = d.step(sample(1), 0.01).actions
    assert EvLevelChanged(None, d.machine.ev_level, 9000) in first
    assert not any(isinstance(a, EvLevelChanged) for a in d.step(sample(2), 0.02).actions)
    assert FeedbackChanged(False) in d.step(RelaySampled(False, False), 0.03).actions
    assert d.step(RelaySampled(False, False), 0.04).actions == ()


def charging() -> tuple[Delivery, float, int]:
    """A delivery whose machine charges (contactor closed, mirror and lock following)."""
    d, t, seq = Delivery(PilotMachine(PilotSettings())), 0.0, 0
    while not d.machine.contactor_commanded:
        t, seq = t + 0.01, seq + 1
        d.step(sample(seq, d.machine.duty_commanded, cp=9000 if t < 1.0 else 6000), t)
        d.step(RelaySampled(d.machine.contactor_commanded, d.machine.lock_commanded), t)
        d.step(MeterSampled((0.0, 0.0, 0.0)), t)
    return d, t, seq


@settings(max_examples=300, deadline=None)
@given(fails=st.integers(0, OPEN_RETRIES + 4), welded=st.booleans(),
       gaps=st.lists(st.floats(0.005, 1.5), min_size=OPEN_RETRIES + 8, max_size=20),
       slow=st.floats(0.0, 0.999), follow_s=st.floats(0.0, 0.45))
def test_r2_welded_only_when_the_board_got_the_open_and_the_contacts_stayed(
        fails: int, welded: bool, gaps: list[float], slow: float, follow_s: float) -> None:
    """The vehicle opens S2 and the machine opens. However often that open fails and however
    late it is delivered (a write returns ``slow`` of the way to the next input): contacts
    that follow within the timeout of the delivery are never called welded; contacts that stay
    closed are, once a sample comes the timeout after the first input that proves the
    delivery. And the open is delivered."""
    s = PilotSettings()
    d, t, seq = charging()
    out: tuple[object, ...] = ()
    while SetContactor(False) not in out:
        t, seq = t + 0.01, seq + 1
        out = d.step(sample(seq, d.machine.duty_commanded, cp=9000), t).actions
    times = [t]
    for g in gaps:
        times.append(times[-1] + g)
    left = fails
    got: float | None = None  # when the board got the open
    proof: float | None = None  # the first input after the delivered write

    def pump(actions: tuple[object, ...], i: int) -> None:
        nonlocal left, got
        for a in actions:
            if a == OPEN or (isinstance(a, Resend) and a.action == OPEN):
                if left > 0:
                    left -= 1
                    pump(d.step(ActionFailed(a), times[i]).actions, i)  # type: ignore[arg-type]
                elif got is None:
                    got = times[i] + slow * (times[i + 1] - times[i])

    pump(out, 0)
    for i, t in enumerate(times[1:-1], start=1):
        if got is not None and proof is None:
            proof = t
        closed = welded or got is None or t < got + follow_s
        pump(d.step(RelaySampled(closed, d.machine.lock_commanded), t).actions, i)
        is_welded = FaultCode.CONTACTOR_WELDED in d.machine.active_faults
        if not welded:
            assert not is_welded, (got, t)
        elif proof is not None and t >= proof + s.contactor_feedback_timeout_s:
            assert is_welded, (got, proof, t)
    assert got is not None and not d.machine.contactor_commanded
