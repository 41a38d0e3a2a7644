"""The retained snapshot (``state``) of the limits and profiles in force."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from agent.api.models.common import (
    MAX_CONNECTORS,
    OUTBOUND,
    Amps,
    CommandRef,
    Connector,
    ContactorState,
    Count,
    DeviceMessage,
    Layer,
    LimitSource,
    PilotState,
    Seq,
    Timestamp,
)


class ActiveProfile(CommandRef):
    """A profile (``profileId``) or a ``setLimit`` curtailment (``commandId``) in force."""

    layer: Layer
    stack_level: Annotated[int, Field(ge=0, le=1000)]
    valid_from: Timestamp | None = None
    valid_to: Timestamp | None = None


class ConnectorSnapshot(BaseModel):
    model_config = OUTBOUND
    connector: Connector
    pilot: PilotState
    offered_current_a: Amps
    contactor: ContactorState
    limit_a: Amps
    limit_source: LimitSource
    limit_ref: CommandRef | None = None
    active_profiles: Annotated[list[ActiveProfile], Field(max_length=256)]


class FailsafeState(BaseModel):
    model_config = OUTBOUND
    active: bool
    since: Timestamp | None = None


class State(DeviceMessage):
    """Retained snapshot published on every change; not journaled, so it carries ``atSeq``."""

    at_seq: Seq
    ts: Timestamp
    config_version: Count
    failsafe: FailsafeState
    connectors: Annotated[list[ConnectorSnapshot], Field(min_length=1, max_length=MAX_CONNECTORS)]
