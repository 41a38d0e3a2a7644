"""The simulated vehicle: GB/T 18487.1-2015 Annex A seen from the vehicle side. Pure physics.

No I/O, no clock: every method takes the current time ``now`` (seconds, any monotonic origin),
so the model is driven by the rig in real time and by unit tests in fake time alike.

Circuit (detection point 1 is on the supply side, after R1)::

    +-12 V --R1 1k--+-- CP line --|>|-- diode 0.7 V --+-- R3 2.74k --- PE
                    |                                 +-- S2 -- R2 1.3k --- PE
               detection point 1

Positive plateau ``V = 0.7 + 11.3 * Rv / (Rv + R1)`` (healthy diode): R3 alone gives 8.98 V,
R3 || R2 gives 5.99 V, the out-of-limit pairs 4000/4000 and 200/200 ohm give 8.23 V and 1.73 V
(gbt18487.md §1.1, §5 item 12). The diode blocks the negative half-wave (-12 V at detection
point 1); a shorted diode lets it follow the divider (``-12 * Rv / (Rv + R1)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Profile = Literal["gbt18487-2015", "iec61851"]

R1_OHM = 1000.0
SOURCE_V = 12.0
DIODE_V = 0.7
R3_OHM = 2740.0
R2_OHM = 1300.0
R4_OHM = 3300.0  # added in series with RC when the plug's latch button opens S3
CC_OPEN_OHM = 0xFFFF
# GB cable code: RC (ohm) for each cable rating (A), gbt18487.md §3.
RC_BY_RATING_A: dict[int, int] = {10: 1500, 16: 680, 32: 220, 63: 100}


def parallel(a: float, b: float) -> float:
    return a * b / (a + b) if a + b > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PilotLoad:
    """What the CP line presents to the supply: open, shorted to PE, or a resistive load."""

    open: bool = True
    shorted: bool = False
    r_ohm: float = 0.0
    diode_ok: bool = True


OPEN_LINE = PilotLoad()


def cp_plateaus_mv(load: PilotLoad, duty_actual: int) -> tuple[int, int]:
    """(cp_high_mv, cp_low_mv) at detection point 1 for a board output ``duty_actual`` (0.1 %)."""
    if load.open:
        high, low = SOURCE_V, -SOURCE_V
    elif load.shorted:
        high, low = 0.0, 0.0
    else:
        ratio = load.r_ohm / (load.r_ohm + R1_OHM)
        if load.diode_ok:
            high = DIODE_V + (SOURCE_V - DIODE_V) * ratio
            low = -SOURCE_V
        else:
            high = SOURCE_V * ratio
            low = -SOURCE_V * ratio
    if duty_actual >= 1000:  # steady +12 V: no negative plateau, the board reports the level
        low = high
    elif duty_actual <= 0:  # steady -12 V
        high = low
    return round(high * 1000), round(low * 1000)


def current_from_duty(duty_permille: int, profile: Profile = "gbt18487-2015") -> float:
    """Current (A) a duty advertises, as the vehicle reads it; 0 when no valid PWM.

    GB (gbt18487.md §2): 10-85 % -> D x 0.6 A; 85-90 % -> (D - 64) x 2.5 A, <= 63 A; the vehicle
    rejects D < 3 %, 7-8 % and D > 90 %; 3-7 % asks for digital communication (no basic
    charging here); 8-10 % is read as 6 A. IEC 61851 extends the second segment to 96 % / 80 A.
    """
    d = duty_permille / 10.0
    top = 90.0 if profile == "gbt18487-2015" else 97.0
    if d < 8.0 or d > top:
        return 0.0
    if d < 10.0:
        return 6.0
    if d <= 85.0:
        return round(d * 0.6, 3)
    if d > 96.0:
        return 80.0
    return round(min((d - 64.0) * 2.5, 63.0 if profile == "gbt18487-2015" else 80.0), 3)


def duty_from_current(current_a: float, profile: Profile = "gbt18487-2015") -> int:
    """Supply-side inverse (0.1 %): I/0.6 for 6-51 A, I/2.5 + 64 above; used by tests only."""
    cap = 63.0 if profile == "gbt18487-2015" else 80.0
    i = min(max(current_a, 6.0), cap)
    d = i / 0.6 if i <= 51.0 else i / 2.5 + 64.0
    return round(d * 10)


@dataclass(slots=True)
class EvParams:
    """Vehicle behaviour; delays are the vehicle's own reaction times."""

    r3_ohm: float = R3_OHM
    r2_ohm: float = R2_OHM
    has_s2: bool = True
    obc_max_a: float = 32.0
    follow_delay_s: float = 2.0  # duty change -> new draw (standard allows <= 5 s)
    start_delay_s: float = 0.3  # mains on -> the charger starts drawing
    stop_reaction_s: float = 1.0  # PWM gone -> draw stops (GB 2023: <= 3 s)
    s2_open_delay_s: float = 1.0  # then S2 opens (GB 2023: <= 3 s)
    s2_close_delay_s: float = 0.5  # PWM (back) and vehicle wants charge -> S2 closes
    taper_s: float = 5.0  # battery full: linear taper to 0 over this time
    profile: Profile = "gbt18487-2015"


@dataclass(slots=True)
class EvFaults:
    """Vehicle-side and cable-side fault injections (hardware.md, gbt18487.md §5)."""

    diode_short: bool = False
    cp_short: bool = False  # CP shorted to PE
    cp_break: bool = False  # CP conductor open: the supply reads +12 V as if unplugged
    pe_loss: bool = False  # PE open: CP loop and CC lose their return path
    cc_open: bool = False  # CC conductor open (supply reads 0xFFFF)
    overcurrent_a: float | None = None  # draw this much regardless of the duty


@dataclass(slots=True)
class Ev:
    """One vehicle with its cable. Call ``update(now, duty_actual, mains_on)`` often (10 ms)."""

    params: EvParams = field(default_factory=EvParams)
    faults: EvFaults = field(default_factory=EvFaults)
    plugged: bool = False
    cable_rating_a: float = 32.0
    rc_ohm: int = RC_BY_RATING_A[32]
    latch_pressed: bool = False
    s2_closed: bool = False
    wants_charge: bool = False
    full: bool = False
    _taper_start: float | None = None
    _seen_offer: float = 0.0
    _offer_since: float = 0.0
    _applied_limit: float = 0.0
    _mains_since: float | None = None
    _pwm_lost_at: float | None = None
    _pwm_seen_at: float | None = None
    _current_a: float = 0.0

    # --- actions ---------------------------------------------------------------------------

    def plug_in(
        self, now: float, cable_rating_a: float = 32.0, *, rc_ohm: int | None = None,
        wants_charge: bool = False,
    ) -> None:
        """Insert the plug; ``wants_charge`` makes the vehicle close S2 itself on PWM."""
        self.plugged = True
        self.cable_rating_a = cable_rating_a
        self.rc_ohm = rc_ohm if rc_ohm is not None else _rc_for_rating(cable_rating_a)
        self.s2_closed = False
        self.wants_charge = wants_charge
        self.full = False
        self._taper_start = None
        self._pwm_lost_at = None
        self._pwm_seen_at = None

    def unplug(self, now: float) -> None:
        self.plugged = False
        self.s2_closed = False
        self.wants_charge = False
        self._current_a = 0.0

    def close_s2(self, now: float) -> None:
        self.wants_charge = True
        self.s2_closed = True

    def open_s2(self, now: float) -> None:
        self.wants_charge = False
        self.s2_closed = False

    def set_obc_max_a(self, now: float, current_a: float) -> None:
        self.params.obc_max_a = current_a

    def set_resistors(self, r2_ohm: float | None = None, r3_ohm: float | None = None) -> None:
        if r2_ohm is not None:
            self.params.r2_ohm = r2_ohm
        if r3_ohm is not None:
            self.params.r3_ohm = r3_ohm

    def battery_full(self, now: float, taper_s: float | None = None) -> None:
        """Start the end-of-charge taper; when it reaches 0 A the vehicle opens S2."""
        if taper_s is not None:
            self.params.taper_s = taper_s
        self._taper_start = now

    # --- what the supply sees --------------------------------------------------------------

    def pilot_load(self) -> PilotLoad:
        f = self.faults
        if not self.plugged or f.cp_break or f.pe_loss:
            return OPEN_LINE
        if f.cp_short:
            return PilotLoad(open=False, shorted=True)
        p = self.params
        closed = self.s2_closed or not p.has_s2
        r = parallel(p.r3_ohm, p.r2_ohm) if closed else p.r3_ohm
        return PilotLoad(open=False, r_ohm=r, diode_ok=not f.diode_short)

    def cc_ohm(self) -> int:
        if not self.plugged or self.faults.cc_open or self.faults.pe_loss:
            return CC_OPEN_OHM
        return self.rc_ohm + (round(R4_OHM) if self.latch_pressed else 0)

    def current_a(self) -> float:
        return self._current_a

    # --- dynamics --------------------------------------------------------------------------

    def sees_pwm(self, duty_actual: int) -> bool:
        """The vehicle sees a PWM it may charge on (line intact, valid duty)."""
        line_ok = self.plugged and not (
            self.faults.cp_break or self.faults.pe_loss or self.faults.cp_short
        )
        return line_ok and current_from_duty(duty_actual, self.params.profile) > 0

    def update(self, now: float, duty_actual: int, mains_on: bool) -> float:
        """Advance to ``now`` with the supply's output; returns the current drawn (A)."""
        p = self.params
        pwm = self.sees_pwm(duty_actual)
        offer = current_from_duty(duty_actual, p.profile) if pwm else 0.0
        self._track_pwm(now, pwm)
        if offer != self._seen_offer:
            self._seen_offer, self._offer_since = offer, now
        drawing = self._current_a > 0
        delay = p.stop_reaction_s if offer == 0 else p.follow_delay_s
        if not drawing or now - self._offer_since >= delay:
            self._applied_limit = self._seen_offer
        powered = mains_on and self.plugged
        if not powered:
            self._mains_since = None
        elif self._mains_since is None:
            self._mains_since = now
        self._current_a = self._draw(now, powered)
        return self._current_a

    def _track_pwm(self, now: float, pwm: bool) -> None:
        p = self.params
        if pwm:
            self._pwm_lost_at = None
            if self._pwm_seen_at is None:
                self._pwm_seen_at = now
            auto_close = (
                p.has_s2 and self.wants_charge and not self.s2_closed and not self.full
            )
            if auto_close and now - self._pwm_seen_at >= p.s2_close_delay_s:
                self.s2_closed = True
            return
        self._pwm_seen_at = None
        if not (self.plugged and self.s2_closed and p.has_s2):
            self._pwm_lost_at = None
            return
        if self._pwm_lost_at is None:
            self._pwm_lost_at = now
        elif now - self._pwm_lost_at >= p.stop_reaction_s + p.s2_open_delay_s:
            self.s2_closed = False  # stays ``wants_charge``: recloses when PWM returns

    def _draw(self, now: float, powered: bool) -> float:
        p = self.params
        ready = self.s2_closed or not p.has_s2
        if not (powered and ready) or self._mains_since is None:
            return 0.0
        if self.faults.overcurrent_a is not None:
            return self.faults.overcurrent_a
        if now - self._mains_since < p.start_delay_s or self.full:
            return 0.0
        limit = min(self._applied_limit, p.obc_max_a, self.cable_rating_a)
        if self._taper_start is not None:
            left = 1.0 - (now - self._taper_start) / p.taper_s if p.taper_s > 0 else 0.0
            if left <= 0:
                self.full = True
                self._taper_start = None
                if p.has_s2:
                    self.s2_closed = False
                    self.wants_charge = False
                return 0.0
            limit *= left
        return round(max(limit, 0.0), 3)


def _rc_for_rating(rating_a: float) -> int:
    """RC of the lowest standard cable code that carries ``rating_a``."""
    for rating, rc in sorted(RC_BY_RATING_A.items()):
        if rating_a <= rating:
            return rc
    return RC_BY_RATING_A[63]
