"""Events (``evt``): journaled, numbered by the device-wide ``seq``, each type with its body."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, TypeAdapter

from agent.api.models.common import (
    OUTBOUND,
    Amps,
    CommandId,
    CommandRef,
    Connector,
    ContactorFeedback,
    ContactorState,
    Count,
    DeviceMessage,
    FailsafeLimit,
    FailsafeSettings,
    IssuerId,
    Limit,
    PilotState,
    PositiveSeconds,
    Seconds,
    Seq,
    Text,
    Timestamp,
)
from agent.api.models.sessions import (
    IdleOccupancyBody,
    SessionEndedBody,
    SessionStartedBody,
    SessionUpdatedBody,
)
from agent.api.reasons import OptOutReason, Reason
from agent.faults import FaultCode


class CommandStartedBody(CommandRef):
    """``appliedLimit``: the command's limit in the unit it was sent in (a setLimit in kW is
    reported in kW); ``appliedLimitA``: the connector's resulting composite, A per phase."""

    applied_limit: Limit
    applied_limit_a: Amps | None = None
    random_delay_s: Annotated[int, Field(ge=0, le=86400)]
    note: Text | None = None


class CommandSupersededBody(CommandRef):
    superseded_by: CommandRef


class CommandClearedBody(CommandRef):
    cleared_by: CommandId | None = None


class CommandOptedOutBody(CommandRef):
    reason: OptOutReason
    detail: Text | None = None


class PilotStateChangedBody(BaseModel):
    model_config = OUTBOUND
    from_: PilotState
    to: PilotState
    volts: Annotated[float, Field(ge=-15, le=15)]


class ContactorChangedBody(BaseModel):
    model_config = OUTBOUND
    commanded: ContactorState
    feedback: ContactorFeedback


class FaultBody(BaseModel):
    model_config = OUTBOUND
    code: FaultCode
    detail: Text | None = None


class LinkRestoredBody(BaseModel):
    model_config = OUTBOUND
    outage_s: Seconds
    messages_buffered: Count
    telemetry_dropped: Count


class FailsafeEnteredBody(BaseModel):
    model_config = OUTBOUND
    after_s: PositiveSeconds
    limit: FailsafeLimit


class FailsafeExitedBody(BaseModel):
    model_config = OUTBOUND
    duration_s: Seconds


class DeviceConfig(BaseModel):
    model_config = OUTBOUND
    telemetry_period_s: Annotated[int, Field(ge=1, le=3600)]
    random_delay_max_s: Annotated[int, Field(ge=0, le=1800)]
    failsafe: FailsafeSettings | None = None
    idle_occupancy_s: Annotated[int, Field(ge=0, le=86400)]


class ConfigChangedBody(BaseModel):
    model_config = OUTBOUND
    config_version: Count
    config: DeviceConfig
    command_id: CommandId | None = None


class SecurityRejectBody(BaseModel):
    """What was refused and why; never key material, signatures or payload bytes."""

    model_config = OUTBOUND
    reason: Reason
    command_id: CommandId | None = None
    issuer: IssuerId | None = None
    command_type: Annotated[str, StringConstraints(max_length=32)] | None = None
    detail: Text | None = None


class DeviceEvent(DeviceMessage):
    seq: Seq
    ts: Timestamp
    connector: Connector | None = None


class CommandStartedEvent(DeviceEvent):
    type: Literal["commandStarted"] = "commandStarted"
    body: CommandStartedBody


class CommandSupersededEvent(DeviceEvent):
    type: Literal["commandSuperseded"] = "commandSuperseded"
    body: CommandSupersededBody


class CommandCompletedEvent(DeviceEvent):
    type: Literal["commandCompleted"] = "commandCompleted"
    body: CommandRef


class CommandExpiredEvent(DeviceEvent):
    type: Literal["commandExpired"] = "commandExpired"
    body: CommandRef


class CommandClearedEvent(DeviceEvent):
    type: Literal["commandCleared"] = "commandCleared"
    body: CommandClearedBody


class CommandOptedOutEvent(DeviceEvent):
    type: Literal["commandOptedOut"] = "commandOptedOut"
    body: CommandOptedOutBody


class PilotStateChangedEvent(DeviceEvent):
    type: Literal["pilotStateChanged"] = "pilotStateChanged"
    body: PilotStateChangedBody


class ContactorChangedEvent(DeviceEvent):
    type: Literal["contactorChanged"] = "contactorChanged"
    body: ContactorChangedBody


class FaultEvent(DeviceEvent):
    type: Literal["fault"] = "fault"
    body: FaultBody


class FaultClearedEvent(DeviceEvent):
    type: Literal["faultCleared"] = "faultCleared"
    body: FaultBody


class SessionStartedEvent(DeviceEvent):
    type: Literal["sessionStarted"] = "sessionStarted"
    body: SessionStartedBody


class SessionUpdatedEvent(DeviceEvent):
    type: Literal["sessionUpdated"] = "sessionUpdated"
    body: SessionUpdatedBody


class SessionEndedEvent(DeviceEvent):
    type: Literal["sessionEnded"] = "sessionEnded"
    body: SessionEndedBody


class IdleOccupancyEvent(DeviceEvent):
    type: Literal["idleOccupancy"] = "idleOccupancy"
    body: IdleOccupancyBody


class LinkRestoredEvent(DeviceEvent):
    type: Literal["linkRestored"] = "linkRestored"
    body: LinkRestoredBody


class FailsafeEnteredEvent(DeviceEvent):
    type: Literal["failsafeEntered"] = "failsafeEntered"
    body: FailsafeEnteredBody


class FailsafeExitedEvent(DeviceEvent):
    type: Literal["failsafeExited"] = "failsafeExited"
    body: FailsafeExitedBody


class ConfigChangedEvent(DeviceEvent):
    type: Literal["configChanged"] = "configChanged"
    body: ConfigChangedBody


class SecurityRejectEvent(DeviceEvent):
    type: Literal["securityReject"] = "securityReject"
    body: SecurityRejectBody


Event = Annotated[
    CommandStartedEvent
    | CommandSupersededEvent
    | CommandCompletedEvent
    | CommandExpiredEvent
    | CommandClearedEvent
    | CommandOptedOutEvent
    | PilotStateChangedEvent
    | ContactorChangedEvent
    | FaultEvent
    | FaultClearedEvent
    | SessionStartedEvent
    | SessionUpdatedEvent
    | SessionEndedEvent
    | IdleOccupancyEvent
    | LinkRestoredEvent
    | FailsafeEnteredEvent
    | FailsafeExitedEvent
    | ConfigChangedEvent
    | SecurityRejectEvent,
    Field(discriminator="type"),
]


@cache
def event_adapter() -> TypeAdapter[Event]:
    """Built on first use (the agent itself validates event bodies, not whole events)."""
    return TypeAdapter(Event)
