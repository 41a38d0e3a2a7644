"""Commands of the API v1 (``cmd``): they come from outside, so they are strict, accept only wire
names and forbid unknown fields.
"""

from __future__ import annotations

from functools import cache
from itertools import pairwise
from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, StringConstraints, TypeAdapter, model_validator
from pydantic_core import PydanticCustomError

from agent.api.models.common import (
    INBOUND,
    MAX_PERIODS,
    MAX_SIG_CHARS,
    RECURRENCY_S,
    CommandId,
    Connector,
    DeviceId,
    FailsafeSettings,
    IdTag,
    IssuerId,
    Layer,
    Limit,
    LimitValue,
    PositiveSeconds,
    ProfileId,
    ProfileKind,
    Recurrency,
    ScheduleUnit,
    Seconds,
    Seq,
    Text,
    Timestamp,
)


def _schedule_error(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_schedule", message)


class SetLimitBody(BaseModel):
    """A curtailment lease (grid layer, stackLevel = priority) for the device, a group or one
    connector. A higher priority overrides a lower one. At the same priority a connector-specific
    lease and one for all connectors (sent to the device without connector, or to a group) both
    apply and the lower wins: both are limits of some part of the network, and lifting one for
    a connector takes an explicit higher priority. A lease replaces the one with the same target
    and priority (a group lease and a device-wide one have the same target: all connectors).
    W/kW are converted with each connector's own phases and voltage."""

    model_config = INBOUND
    limit: Limit
    duration_s: Annotated[int, Field(ge=1, le=7 * 86400)]
    start_at: Timestamp | None = None
    priority: Annotated[int, Field(ge=0, le=1000)] = 0
    randomize_start_s: Annotated[int, Field(ge=0, le=86400)] = 0
    dsr: bool = False
    reason: Text | None = None


class SchedulePeriod(BaseModel):
    model_config = INBOUND
    offset_s: Seconds
    limit: LimitValue
    phases: Annotated[int, Field(ge=1, le=3)] | None = None


class Schedule(BaseModel):
    model_config = INBOUND
    unit: ScheduleUnit
    start_at: Timestamp | None = None
    duration_s: PositiveSeconds | None = None
    randomize_start_s: Annotated[int, Field(ge=0, le=86400)] = 0
    periods: Annotated[list[SchedulePeriod], Field(min_length=1, max_length=MAX_PERIODS)]

    @model_validator(mode="after")
    def _periods_ordered(self) -> Self:
        offsets = [p.offset_s for p in self.periods]
        if offsets[0] != 0:
            raise _schedule_error("the first period must start at offsetS 0")
        if any(b <= a for a, b in pairwise(offsets)):
            raise _schedule_error("period offsets must strictly increase")
        if self.duration_s is not None and offsets[-1] >= self.duration_s:
            raise _schedule_error("every period must start before durationS")
        return self


class SetProfileBody(BaseModel):
    """A scheduled limit (OCPP smart charging). Layer siteMax is the station's limit (OCPP
    ChargingStationMaxProfile): never addressed to one connector (rejected, INVALID_SCHEDULE);
    the sum of the connectors' offers never exceeds it. It is shared equally among the
    connectors whose vehicles want energy (in W: equal power, each connector at its own phases
    and voltage; one capped lower by its own limits leaves the rest to the others); a share
    below 6 A pauses the vehicle that arrived last (first come, first served) until a share of
    at least 6 A frees up; shares are reallocated at once when vehicles arrive, leave or stop
    asking for energy, and decreases are applied before increases. In the default and session
    layers a connector-specific profile wins over an all-connector one of the same stackLevel;
    in the grid layer the lower of the two wins."""

    model_config = INBOUND
    profile_id: ProfileId
    layer: Layer
    stack_level: Annotated[int, Field(ge=0, le=1000)]
    kind: ProfileKind
    recurrency: Recurrency | None = None
    valid_from: Timestamp | None = None
    valid_to: Timestamp | None = None
    max_offline_s: PositiveSeconds | None = None
    schedule: Schedule

    @model_validator(mode="after")
    def _kind_consistent(self) -> Self:
        """OCPP K01 rules: relative has no start, absolute and recurring have one."""
        if (self.kind == "recurring") != (self.recurrency is not None):
            raise _schedule_error("recurrency is required for kind recurring and only for it")
        if self.kind == "relative" and self.schedule.start_at is not None:
            raise _schedule_error("a relative profile has no schedule.startAt")
        if self.kind != "relative" and self.schedule.start_at is None:
            raise _schedule_error(f"kind {self.kind} needs schedule.startAt")
        if self.valid_from and self.valid_to and self.valid_from >= self.valid_to:
            raise _schedule_error("validFrom must be before validTo")
        if self.recurrency is not None:
            cycle = RECURRENCY_S[self.recurrency]
            last_offset = self.schedule.periods[-1].offset_s
            if (self.schedule.duration_s or 0) > cycle or last_offset >= cycle:
                raise _schedule_error(f"a {self.recurrency} schedule must fit in {cycle} s")
        return self


class ClearProfileById(BaseModel):
    model_config = INBOUND
    profile_id: ProfileId


class ClearProfileByFilter(BaseModel):
    """Every profile and curtailment matching the filter; ``{}`` clears them all (as OCPP)."""

    model_config = INBOUND
    layer: Layer | None = None
    stack_level: Annotated[int, Field(ge=0, le=1000)] | None = None


class GetCompositeBody(BaseModel):
    model_config = INBOUND
    horizon_s: Annotated[int, Field(ge=1, le=7 * 86400)]
    unit: ScheduleUnit


class SessionBody(BaseModel):
    model_config = INBOUND
    id_tag: IdTag | None = None


class SetConfigBody(BaseModel):
    model_config = INBOUND
    telemetry_period_s: Annotated[int, Field(ge=1, le=3600)] | None = None
    random_delay_max_s: Annotated[int, Field(ge=0, le=1800)] | None = None
    failsafe: FailsafeSettings | None = None
    idle_occupancy_s: Annotated[int, Field(ge=0, le=86400)] | None = None


class ResyncBody(BaseModel):
    model_config = INBOUND
    from_seq: Seq


class DecommissionBody(BaseModel):
    model_config = INBOUND
    confirm: DeviceId


class _Envelope(BaseModel):
    model_config = INBOUND
    v: Literal[1]
    id: CommandId
    issuer: IssuerId
    issued_at: Timestamp
    expires_at: Timestamp | None = None
    seq: Seq
    connector: Connector | None = None
    sig: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SIG_CHARS)] | None = None

    @model_validator(mode="after")
    def _expires_after_issue(self) -> Self:
        if self.expires_at is not None and self.expires_at <= self.issued_at:
            raise PydanticCustomError("expiry_order", "expiresAt must be after issuedAt")
        return self


class SetLimitCommand(_Envelope):
    type: Literal["setLimit"]
    body: SetLimitBody


class SetProfileCommand(_Envelope):
    type: Literal["setProfile"]
    body: SetProfileBody


class ClearProfileCommand(_Envelope):
    type: Literal["clearProfile"]
    body: ClearProfileById | ClearProfileByFilter


class GetCompositeCommand(_Envelope):
    type: Literal["getComposite"]
    body: GetCompositeBody


class StartSessionCommand(_Envelope):
    type: Literal["startSession"]
    body: SessionBody


class StopSessionCommand(_Envelope):
    type: Literal["stopSession"]
    body: SessionBody


class SetConfigCommand(_Envelope):
    type: Literal["setConfig"]
    body: SetConfigBody


class ResyncCommand(_Envelope):
    type: Literal["resync"]
    body: ResyncBody


class DecommissionCommand(_Envelope):
    type: Literal["decommission"]
    body: DecommissionBody


Command = Annotated[
    SetLimitCommand
    | SetProfileCommand
    | ClearProfileCommand
    | GetCompositeCommand
    | StartSessionCommand
    | StopSessionCommand
    | SetConfigCommand
    | ResyncCommand
    | DecommissionCommand,
    Field(discriminator="type"),
]


@cache
def command_adapter() -> TypeAdapter[Command]:
    """Built on first use: a charger that never receives a command never pays for it."""
    return TypeAdapter(Command)
