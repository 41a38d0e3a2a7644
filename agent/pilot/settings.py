"""Settings of one connector's pilot core (the shell builds them from the validated config)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

from agent.errors import ConfigError
from agent.pilot.classifier import CpLevel
from agent.pilot.profiles import GBT18487_2015, PilotProfile

__all__ = ["PilotSettings"]


@dataclass(frozen=True, slots=True)
class PilotSettings:
    """Numbers the machine needs; times in seconds, currents in amperes.

    Raises:
        ConfigError: a value is out of range (the key names the field).
    """

    profile: PilotProfile = GBT18487_2015
    connection: Literal["socket", "cable"] = "socket"  # mode B (lock, CC read) | mode C
    hardware_rating_a: float = 32.0
    cable_rating_a: float | None = None  # the fixed cable's rating, mode C only
    authorisation: Literal["auto", "remote"] = "auto"
    debounce_samples: int = 2
    debounce_fast: tuple[tuple[CpLevel, int], ...] = ()  # e.g. ((CpLevel.SHORT, 1),)
    contactor_feedback_timeout_s: float = 0.5
    lock_timeout_s: float = 1.0
    lock_release_s: float = 5.0
    overcurrent_abs_margin_a: float = 2.0
    overcurrent_rel_margin: float = 0.10
    overcurrent_persist_s: float = 5.0
    ev_follow_s: float = 5.0  # the EV may keep the old current this long after a duty cut
    meter_grace_s: float = 10.0
    pilot_lost_s: float = 0.06
    pilot_frozen_s: float = 0.1
    relay_lost_s: float = 1.0
    pause_open_timeout_s: float = 3.0
    pause_open_current_a: float = 1.0
    min_off_s: float = 60.0
    max_cycles_per_hour: int = 20
    reset_window_s: float = 1.0  # a reset clears faults whose cause is gone within this time
    board_reset_interval_s: float = 1.0  # retry fault_reset while a latched board bit shows

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "min_off_s":  # 0 switches the minimum off time off
                if not (math.isfinite(value) and value >= 0):
                    raise ConfigError("must be >= 0 seconds", key=f.name)
            elif f.name.endswith("_s") and not (math.isfinite(value) and value > 0):
                raise ConfigError("must be a positive number of seconds", key=f.name)
        if self.connection not in ("socket", "cable"):
            raise ConfigError("must be 'socket' or 'cable'", key="connection")
        if self.authorisation not in ("auto", "remote"):
            raise ConfigError("must be 'auto' or 'remote'", key="authorisation")
        if not (math.isfinite(self.hardware_rating_a) and self.hardware_rating_a > 0):
            raise ConfigError("must be a positive current", key="hardware_rating_a")
        if self.connection == "cable" and not (
            self.cable_rating_a is not None and self.cable_rating_a > 0
        ):
            raise ConfigError(
                "a fixed cable needs its rating", key="cable_rating_a", fix="set the cable's A"
            )
        if self.debounce_samples < 1 or self.max_cycles_per_hour < 1:
            raise ConfigError("must be >= 1", key="debounce_samples/max_cycles_per_hour")
        if self.contactor_feedback_timeout_s >= self.lock_release_s:
            raise ConfigError(
                "the lock is released after the open is confirmed; must be < lock_release_s",
                key="contactor_feedback_timeout_s",
            )
        if self.overcurrent_persist_s >= 10.0:
            raise ConfigError(
                "GB/T 34657.1 cuts within 10 s of the onset", key="overcurrent_persist_s"
            )
