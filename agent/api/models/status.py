"""The retained status (``status``): the birth message, the Last Will and the decommission."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, TypeAdapter

from agent.api.models.common import (
    MAX_CONNECTORS,
    MAX_PAYLOAD_BYTES,
    MAX_PERIODS,
    OUTBOUND,
    Amps,
    Connector,
    DeviceMessage,
    IssuerId,
    LimitUnit,
    Seq,
)


class ConnectorInfo(BaseModel):
    model_config = OUTBOUND
    connector: Connector
    phases: Literal[1, 3]
    max_current_a: Amps
    # who generates the control pilot: the agent's own pilot board, or a retrofitted wallbox
    # (which then also owns the GB/T 18487.1 reactions and its contactor)
    pilot: Literal["agent", "wallbox"] = "agent"
    wallbox_profile: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class Capabilities(BaseModel):
    model_config = OUTBOUND
    max_periods: Annotated[int, Field(ge=1, le=MAX_PERIODS)]
    max_stack_level: Annotated[int, Field(ge=0, le=1000)]
    units: Annotated[list[LimitUnit], Field(min_length=1, max_length=3)]
    discharge: bool
    signed_commands: bool
    groups: Annotated[list[IssuerId], Field(max_length=16)]
    max_payload_bytes: Annotated[int, Field(ge=1, le=MAX_PAYLOAD_BYTES)]


class OnlineStatus(DeviceMessage):
    """Birth message (retained ``status``)."""

    online: Literal[True] = True
    agent_version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    api_version: Literal[1] = 1
    connectors: Annotated[list[ConnectorInfo], Field(min_length=1, max_length=MAX_CONNECTORS)]
    capabilities: Capabilities
    at_seq: Seq | None = None


class OfflineStatus(DeviceMessage):
    """Last Will (``bootId`` of the session it belongs to) or the final decommission status."""

    online: Literal[False] = False
    decommissioned: bool = False


Status = OnlineStatus | OfflineStatus


@cache
def status_adapter() -> TypeAdapter[Status]:
    """Built on first use (schemas and tests; the agent builds OnlineStatus/OfflineStatus)."""
    return TypeAdapter(Status)
