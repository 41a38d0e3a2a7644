"""The bodies of the session events: a session's start, updates, idle time and its record."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from agent.api.models.common import (
    MAX_LIMIT,
    OUTBOUND,
    Amps,
    CommandRef,
    Count,
    IdTag,
    Limit,
    LimitSource,
    PilotState,
    Seconds,
    SessionId,
    Timestamp,
)
from agent.api.reasons import StopReason


class SessionStartedBody(BaseModel):
    model_config = OUTBOUND
    session_id: SessionId
    plug_in_at: Timestamp
    meter_start_wh: Count | None = None
    id_tag: IdTag | None = None


class SessionUpdatedBody(BaseModel):
    model_config = OUTBOUND
    session_id: SessionId
    pilot: PilotState
    offered_current_a: Amps
    limit_a: Amps
    limit_source: LimitSource
    random_delay_s: Annotated[int, Field(ge=0, le=86400)] | None = None


class Curtailment(CommandRef):
    from_: Timestamp
    to: Timestamp | None = None
    limit: Limit


class RandomDelay(BaseModel):
    model_config = OUTBOUND
    at: Timestamp
    s: Annotated[int, Field(ge=0, le=86400)]


class CurtailmentsMerged(BaseModel):
    """The session's earlier curtailments, merged: a session record keeps its latest 32
    curtailments; the ones before fold into these exact totals (``totalS`` sums each merged
    entry's own duration)."""

    model_config = OUTBOUND
    count: Annotated[int, Field(ge=1)]
    first_from: Timestamp
    last_to: Timestamp
    total_s: Annotated[float, Field(ge=0)]
    min_limit_a: Annotated[float, Field(ge=0, le=MAX_LIMIT)] | None = None


class RandomDelaysMerged(BaseModel):
    """The session's earlier random delays (beyond the latest 32), merged."""

    model_config = OUTBOUND
    count: Annotated[int, Field(ge=1)]
    total_s: Annotated[int, Field(ge=0)]


class SessionEndedBody(BaseModel):
    """The session record; energy comes from the meter's register, never from telemetry."""

    model_config = OUTBOUND
    session_id: SessionId
    plug_in_at: Timestamp
    charge_start_at: Timestamp | None = None
    charge_end_at: Timestamp | None = None
    plug_out_at: Timestamp | None = None
    meter_start_wh: Count
    meter_stop_wh: Count
    energy_wh: Count
    max_power_w: Annotated[float, Field(ge=0, le=MAX_LIMIT)]
    stop_reason: StopReason
    curtailments: Annotated[list[Curtailment], Field(max_length=1000)]
    random_delays: Annotated[list[RandomDelay], Field(max_length=1000)]
    idle_occupancy_s: Seconds
    id_tag: IdTag | None = None
    offline: bool
    curtailments_merged: CurtailmentsMerged | None = None
    random_delays_merged: RandomDelaysMerged | None = None

    @model_validator(mode="after")
    def _energy_from_register(self) -> Self:
        if self.energy_wh != self.meter_stop_wh - self.meter_start_wh:
            raise PydanticCustomError("energy", "energyWh must equal meterStopWh - meterStartWh")
        return self


class IdleOccupancyBody(BaseModel):
    model_config = OUTBOUND
    session_id: SessionId
    charge_end_at: Timestamp
    idle_s: Seconds
