"""Replies (``rsp``): one per command, within a second of receipt; not journaled."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from agent.api.models.common import (
    MAX_LIMIT,
    MAX_PERIODS,
    OUTBOUND,
    CommandId,
    Connector,
    Count,
    DeviceId,
    LimitSource,
    PositiveSeconds,
    ScheduleUnit,
    Seconds,
    Seq,
    Timestamp,
)
from agent.api.reasons import Reason, ReplyStatus


class CompositePeriod(BaseModel):
    model_config = OUTBOUND
    offset_s: Seconds
    limit: Annotated[float, Field(ge=0, le=MAX_LIMIT)]
    phases: Annotated[int, Field(ge=1, le=3)] | None = None
    source: LimitSource


class CompositeSchedule(BaseModel):
    """What the charger will offer: the minimum over all layers and local limits."""

    model_config = OUTBOUND
    connector: Connector
    start_at: Timestamp
    duration_s: PositiveSeconds
    unit: ScheduleUnit
    periods: Annotated[list[CompositePeriod], Field(min_length=1, max_length=4 * MAX_PERIODS)]


class Reply(BaseModel):
    """Sent to ``rsp`` (or the v5 Response Topic) within a second of receipt; not journaled."""

    model_config = OUTBOUND
    v: Literal[1] = 1
    command_id: CommandId | None
    device_id: DeviceId
    status: ReplyStatus
    reason: Reason
    detail: Annotated[str, StringConstraints(max_length=1024)] | None = None
    applied_at: Timestamp | None = None
    at_seq: Seq
    original_status: ReplyStatus | None = None
    composite: list[CompositeSchedule] | None = None
    config_version: Count | None = None
