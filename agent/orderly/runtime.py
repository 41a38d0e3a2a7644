"""Runtime settings the aggregator may change with ``setConfig``, persisted with a version."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

from agent.api import models as m
from agent.config import MqttConfig
from agent.errors import ProtocolError
from agent.limits import LimitsEngine
from agent.orderly.events import from_wire
from agent.store import atomic_write

log = structlog.get_logger("agent.runtime")


@dataclass
class RuntimeSettings:
    path: Path = field(repr=False)
    config_version: int = 0
    telemetry_period_s: int = 10
    telemetry_idle_period_s: int = 60
    random_delay_max_s: int = 600
    failsafe_after_s: float = 300.0
    failsafe_value: float = 10.0
    failsafe_unit: str = "A"
    idle_occupancy_s: int = 1800

    @classmethod
    def load(cls, path: Path, cfg: MqttConfig) -> RuntimeSettings:
        base = cls(path, 0, cfg.telemetry_period_s, cfg.telemetry_idle_period_s,
                   cfg.random_delay_max_s, cfg.failsafe.after_s, cfg.failsafe.value,
                   cfg.failsafe.unit, cfg.idle_occupancy_s)
        if not path.exists():
            return base
        try:
            data = json.loads(path.read_text())
            fields = {k: v for k, v in data.items() if k in asdict(base) and k != "path"}
            return cls(path, **fields)
        except (OSError, ValueError, TypeError) as exc:
            log.error("runtime_settings_unreadable", path=str(path), error=str(exc))
            return base

    def save(self) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "path"}
        atomic_write(self.path, json.dumps(data).encode())

    def apply(self, body: m.SetConfigBody, engine: LimitsEngine) -> int:
        """Apply a setConfig body (validated by its model); returns the new config version."""
        if body.failsafe is not None:
            fs = body.failsafe
            value, unit = fs.limit.value, fs.limit.unit
            stored_value, stored_unit = (value * 1000, "W") if unit == "kW" else (value, unit)
            reason = engine.configure_failsafe(float(fs.after_s), stored_value, stored_unit)
            if reason.value != "OK":
                raise ProtocolError("the fail-safe limit must still allow charging (>= 6 A)",
                                    reason="LOCAL_CONSTRAINT")
            self.failsafe_after_s, self.failsafe_value, self.failsafe_unit = (
                float(fs.after_s), stored_value, stored_unit)
        if body.random_delay_max_s is not None:
            engine.configure_random_delay(float(body.random_delay_max_s))
            self.random_delay_max_s = body.random_delay_max_s
        if body.telemetry_period_s is not None:
            self.telemetry_period_s = body.telemetry_period_s
        if body.idle_occupancy_s is not None:
            self.idle_occupancy_s = body.idle_occupancy_s
        self.config_version += 1
        return self.config_version

    def device_config(self) -> m.DeviceConfig:
        return from_wire(m.DeviceConfig, {
            "telemetryPeriodS": self.telemetry_period_s,
            "randomDelayMaxS": self.random_delay_max_s,
            "failsafe": {"afterS": max(1, round(self.failsafe_after_s)),
                         "limit": {"value": self.failsafe_value, "unit": self.failsafe_unit}},
            "idleOccupancyS": self.idle_occupancy_s,
        })
