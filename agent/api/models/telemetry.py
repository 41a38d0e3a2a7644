"""Periodic telemetry (``tel``) and what each of its measurands means."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from agent.api.models.common import (
    MAX_CONNECTORS,
    MAX_LIMIT,
    OUTBOUND,
    Amps,
    Connector,
    ContactorState,
    Count,
    DeviceMessage,
    LimitSource,
    PilotState,
    Seq,
    SessionId,
    Timestamp,
)


class ConnectorTelemetry(BaseModel):
    model_config = OUTBOUND
    connector: Connector
    pilot: PilotState
    power_w: Annotated[float, Field(ge=-MAX_LIMIT, le=MAX_LIMIT)]
    current_a: Annotated[list[Annotated[float, Field(ge=-1000, le=1000)]], Field(max_length=3)]
    voltage_v: Annotated[list[Annotated[float, Field(ge=0, le=1000)]], Field(max_length=3)]
    energy_import_wh: Count
    offered_current_a: Amps
    limit_a: Amps
    limit_source: LimitSource
    session_id: SessionId | None = None
    contactor: ContactorState
    temp_c: Annotated[float, Field(ge=-100, le=300)] | None = None


class Telemetry(DeviceMessage):
    """Periodic measurements (``tel``); journaled, numbered by the device-wide ``seq``."""

    seq: Seq
    ts: Timestamp
    connectors: Annotated[list[ConnectorTelemetry], Field(min_length=1, max_length=MAX_CONNECTORS)]


MEASURANDS: tuple[tuple[str, str, str, str], ...] = (
    # (wire field, OCPP measurand, unit, note)
    ("powerW", "Power.Active.Import", "W", "sum over phases; negative only when discharging"),
    ("currentA", "Current.Import", "A", "one value per phase, L1..L3 (OCPP phase L1, L2, L3)"),
    ("voltageV", "Voltage", "V", "phase-to-neutral, L1..L3 (OCPP phase L1-N, L2-N, L3-N)"),
    ("energyImportWh", "Energy.Active.Import.Register", "Wh", "the meter's cumulative register"),
    ("offeredCurrentA", "Current.Offered", "A", "what the pilot PWM offers the EV now"),
    ("limitA", "Current.Offered (composite limit)", "A",
     "the composite limit in force; OCPP has no measurand of its own, cf. GetCompositeSchedule"),
    ("tempC", "Temperature", "Celsius", "hottest sensor of the connector (OCPP location Body)"),
    ("pilot", "(none; OCPP ConnectorStatus / ChargingState)", "-",
     "A/B/C as IEC 61851 letters = GB/T 18487.1 states 1/2/3"),
    ("contactor", "(none)", "-", "commanded state of the main contactor"),
    ("limitSource", "(none; cf. ChargingLimitSource)", "-", "the layer that sets limitA"),
)
