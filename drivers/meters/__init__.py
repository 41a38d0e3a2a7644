"""Meter registry: config name -> model (data); every model runs on ``MapMeter``.

Like python-can's ``BACKENDS``, the config names a model and the registry resolves it; a
manufacturer adds a model without code by describing its registers in config::

    meter = meter_from_config("ddsu666", None, bus=meter_bus, unit=1)
    meter = meter_from_config("acme-x1", [{"name": "voltage_l1", "address": 0, "function": 4,
                                           "type": "f32", "unit": "V"}, ...], bus=b, unit=3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from drivers.bus import BusScheduler
from drivers.errors import DriverConfigError
from drivers.meters.maps import (
    DDSU666,
    DTSU666,
    MODELS,
    SDM120,
    SDM630,
    MeterModel,
    SerialDefaults,
    model_from_config,
)
from drivers.meters.meter import DEFAULT_MAX_WORDS, DEFAULT_POLL_S, MapMeter, MeterPlan

METER_MODELS: dict[str, MeterModel] = dict(MODELS)
DEFAULT_MODEL = "ddsu666"

__all__ = [
    "DDSU666",
    "DEFAULT_MODEL",
    "DTSU666",
    "METER_MODELS",
    "SDM120",
    "SDM630",
    "MapMeter",
    "MeterModel",
    "MeterPlan",
    "SerialDefaults",
    "meter_from_config",
    "meter_plan",
    "resolve_model",
]


def resolve_model(
    model: str, registers: Sequence[Mapping[str, Any]] | None = None
) -> MeterModel:
    """The ``MeterModel`` for a config entry: a known name, or a map given in ``registers``."""
    if registers:
        return model_from_config(model, registers)
    try:
        return METER_MODELS[model.lower()]
    except KeyError:
        raise DriverConfigError(
            f"unknown meter model {model!r}", key="meter.model",
            fix=f"one of {', '.join(sorted(METER_MODELS))}, or describe it under meter.registers",
        ) from None


def meter_plan(
    model: str,
    registers: Sequence[Mapping[str, Any]] | None,
    *,
    unit: int = 1,
    max_words_per_read: int = DEFAULT_MAX_WORDS,
    poll_s: float = DEFAULT_POLL_S,
) -> MeterPlan:
    """What a meter from the config's ``model`` (and ``registers``) will read: no bus needed."""
    return MeterPlan(resolve_model(model, registers), unit, max_words_per_read, poll_s)


def meter_from_config(
    model: str,
    registers: Sequence[Mapping[str, Any]] | None,
    *,
    bus: BusScheduler,
    unit: int = 1,
    max_words_per_read: int = DEFAULT_MAX_WORDS,
    poll_s: float = DEFAULT_POLL_S,
) -> MapMeter:
    """A ready meter driver from the config's ``model`` (and ``registers`` if described)."""
    return MapMeter(bus, unit, resolve_model(model, registers),
                    max_words_per_read=max_words_per_read, poll_s=poll_s)
