"""Wallbox state value -> the agent's connector state; composite limit -> register value.

The two rules that must never bend (retrofit.md):

- the register value is the composite limit rounded **down** to what the wallbox can do (its
  step and its range), never above the composite; below its minimum the wallbox pauses through
  its own disable path, never by an illegal current;
- a state value outside the profile's table is not guessed at: it is a fault with the raw value.
"""

from __future__ import annotations

from enum import Enum
from fractions import Fraction

from agent.pilot.classifier import CpLevel
from drivers.wallbox.profiles import WallboxCommand, WallboxProfile

DISABLED = WallboxCommand(0, False)


class VehicleState(Enum):
    """What a wallbox state value means."""

    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"
    F = "F"
    ERROR = "error"


# The agent's CP levels for the wallbox's letters (the API letters follow from them).
LEVELS = {
    VehicleState.A: CpLevel.STATE_1,
    VehicleState.B: CpLevel.STATE_2,
    VehicleState.C: CpLevel.STATE_3,
    VehicleState.D: CpLevel.STATE_D,
    VehicleState.E: CpLevel.INVALID,
    VehicleState.F: CpLevel.NEGATIVE,
    VehicleState.ERROR: CpLevel.INVALID,
}
FAULT_STATES = frozenset({VehicleState.E, VehicleState.F, VehicleState.ERROR})


def vehicle_state(profile: WallboxProfile, value: int) -> VehicleState | None:
    """The meaning of a decoded state value; None when it is outside the table."""
    meaning = profile.states.get(value)
    return None if meaning is None else VehicleState(meaning)


def describe_value(profile: WallboxProfile, value: int) -> str:
    """The raw value as an installer reads it in the vendor's table."""
    if profile.state_encoding == "ascii_high_byte":
        shown = chr(value) if 32 <= value < 127 else "?"
        return f"status byte 0x{value:02X} ({shown!r})"
    return f"state value {value}"


def max_current_a(profile: WallboxProfile, rated_a: float) -> float:
    """The most this connector may ever be given: the wallbox's range and the rating."""
    return min(profile.max_current_a, rated_a)


def command_for(profile: WallboxProfile, limit_a: float | None, rated_a: float) -> WallboxCommand:
    """The register value for a composite limit: rounded down to the wallbox's step, capped at
    its range and the rating; below its minimum, the disable path."""
    step = Fraction(str(profile.current.scale))
    ceiling = Fraction(max_current_a(profile, rated_a))
    target = ceiling if limit_a is None else min(Fraction(max(limit_a, 0.0)), ceiling)
    raw = int(target / step)  # floor: never above the composite
    if raw * step < Fraction(str(profile.min_current_a)):
        return DISABLED
    return WallboxCommand(raw, True)


def command_amps(profile: WallboxProfile, command: WallboxCommand) -> float:
    """Amperes the wallbox offers under a command (0 when paused)."""
    if not command.enabled:
        return 0.0
    return float(Fraction(command.raw) * Fraction(str(profile.current.scale)))


def amps_from_watts(watts: float, phases: int, voltage_v: float) -> float:
    """W -> A per phase at the connector's phases and nominal voltage."""
    return watts / (phases * voltage_v)


def watts_from_amps(amps: float, phases: int, voltage_v: float) -> float:
    return amps * phases * voltage_v
