"""A pure in-memory bench for the pilot core (h11's ``ConnectionPair`` idea).

``Rig`` plays the pilot board (echoes the commanded duty, counts ``sample_seq``), the relay
board (mirror contact and lock feedback follow the coils unless a fault is injected), the
meter and the vehicle (CP level from S2, draws the offered current while the contactor is
closed). Time is simulated: ``rig.run(2.0)`` is 200 polls of 10 ms and takes milliseconds.
Other ``test_pilot_*`` modules import it; its own tests check the rig itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.pilot import (
    Action,
    Event,
    MeterReadFailed,
    MeterSampled,
    PilotMachine,
    PilotSampled,
    PilotSettings,
    RelaySampled,
    ResetBoardFaults,
    SetContactor,
    SetDuty,
    SetLock,
    Step,
    Tick,
)
from agent.pilot.profiles import DUTY_PWM_MAX, DUTY_PWM_MIN, duty_to_current

CP_MV = {"1": 12000, "2": 9000, "3": 6000, "D": 3000, "short": 0, "invalid": 7500}


@dataclass
class Vehicle:
    """The EV side: ``cp`` is its CP state ("1", "2", "3", ...); ``draw_a`` caps its charger."""

    cp: str = "1"
    draw_a: float = 16.0
    diode_ok: bool = True
    ignore_duty_a: float | None = None  # overcurrent injection: draws this regardless


@dataclass
class Rig:
    settings: PilotSettings = field(default_factory=PilotSettings)
    now: float = 0.0
    ev: Vehicle = field(default_factory=Vehicle)
    cc_ohm: int = 220
    status: int = 0  # latched bits as the board reports them
    status_cause: int = 0  # bits whose physical cause is present
    seq: int = 0
    freeze: bool = False
    duty: int = 1000
    coil: bool = False
    lock_coil: bool = False
    weld: bool = False
    no_close: bool = False
    lock_stuck: bool = False
    pilot_silent: bool = False
    relay_silent: bool = False
    meter_silent: bool = False
    log: list[tuple[float, Event, Step]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.m = PilotMachine(self.settings)
        self.apply(self.m.safe_state_actions())

    # --- board side -----------------------------------------------------------------------

    def apply(self, actions: tuple[Action, ...]) -> None:
        for a in actions:
            if isinstance(a, SetContactor):
                self.coil = a.closed
            elif isinstance(a, SetDuty):
                self.duty = a.duty
            elif isinstance(a, SetLock):
                self.lock_coil = a.locked
            elif isinstance(a, ResetBoardFaults):
                self.status &= self.status_cause

    def set_cause(self, bit: int, present: bool = True) -> None:
        """A board-detected cause (RCD, PE loss, ...) appears (latches) or goes away."""
        if present:
            self.status_cause |= bit
            self.status |= bit
        else:
            self.status_cause &= ~bit

    @property
    def pwm(self) -> bool:
        return DUTY_PWM_MIN <= self.duty <= DUTY_PWM_MAX

    @property
    def contact_closed(self) -> bool:
        return self.weld or (self.coil and not self.no_close)

    def current(self) -> float:
        if not self.contact_closed or self.ev.cp != "3":
            return 0.0
        if self.ev.ignore_duty_a is not None:
            return self.ev.ignore_duty_a
        if not self.pwm:
            return 0.0
        return min(self.ev.draw_a, duty_to_current(self.settings.profile, self.duty))

    def pilot_event(self) -> PilotSampled:
        high = CP_MV[self.ev.cp]
        low = high
        if self.pwm:
            low = -12000 if self.ev.diode_ok or self.ev.cp in ("1", "short") else -6000
            if self.ev.cp == "short":
                low = 0
        if not self.freeze:
            self.seq = (self.seq + 1) & 0xFFFF
        return PilotSampled(high, low, self.duty, self.cc_ohm, self.status, self.seq, 25.0)

    # --- driving the machine --------------------------------------------------------------

    def feed(self, event: Event) -> Step:
        step = self.m.step(event, self.now)
        self.log.append((self.now, event, step))
        self.apply(step.actions)
        return step

    def poll(self) -> None:
        """One 10 ms poll cycle of the shell: pilot block and relay inputs."""
        if not self.pilot_silent:
            self.feed(self.pilot_event())
        if not self.relay_silent:
            self.feed(RelaySampled(self.contact_closed, self.lock_coil and not self.lock_stuck))

    def run(self, seconds: float, dt: float = 0.01, meter_every: float = 0.5) -> None:
        end = self.now + seconds
        next_meter = self.now
        while self.now < end - 1e-9:
            self.now = round(self.now + dt, 6)
            self.poll()
            if self.now >= next_meter:
                next_meter = self.now + meter_every
                meter = MeterReadFailed() if self.meter_silent else MeterSampled((self.current(),))
                self.feed(meter)
            if self.pilot_silent and self.relay_silent:
                self.feed(Tick())

    def plug(self, cp: str = "2", settle: float = 0.1) -> None:
        self.ev.cp = cp
        self.run(settle)

    def actions_since(self, t: float) -> list[Action]:
        return [a for when, _, step in self.log if when >= t for a in step.actions]

    def first_time(self, action: Action, since: float = 0.0) -> float | None:
        for when, _, step in self.log:
            if when >= since and action in step.actions:
                return when
        return None


def test_rig_normal_session_charges_and_draws_the_offer() -> None:
    rig = Rig(PilotSettings(hardware_rating_a=16.0))
    rig.plug("2")
    rig.ev.cp = "3"
    rig.run(1.0)
    assert rig.coil and rig.contact_closed
    assert rig.current() == 15.96  # 26.6 %: rounded down, never more than asked


def test_rig_board_echoes_duty_and_counts_seq() -> None:
    rig = Rig()
    first = rig.pilot_event()
    second = rig.pilot_event()
    assert second.sample_seq == first.sample_seq + 1
    assert first.duty_actual == 1000
