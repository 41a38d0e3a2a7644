"""Pydantic models of every message of the aggregator API v1 (``/work/shared/specs/mqtt-api.md``).

Python names are snake_case; the wire names are the spec's camelCase (an alias generator; a
trailing underscore is dropped, so ``from_`` is ``from``). Commands come from outside: they are
strict, accept only wire names and forbid unknown fields. Device-originated messages are also
strict and closed, so the generated JSON Schemas say exactly what v1 sends; new fields come with a
version bump.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from itertools import pairwise
from typing import Annotated, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from agent.api.bounds import MAX_CONNECTORS as MAX_CONNECTORS  # config uses it too
from agent.api.reasons import OptOutReason, Reason, ReplyStatus, StopReason
from agent.faults import FaultCode

API_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024  # checked on the raw bytes, before any parsing
MAX_JSON_DEPTH = 12  # the deepest valid command nests 6 levels
MAX_PERIODS = 672  # a week in 15-minute periods; a charger may advertise fewer (capabilities)
MAX_SEQ = 2**53 - 1  # the largest integer every JSON consumer holds exactly
MAX_DURATION_S = 366 * 86400
MAX_LIMIT = 1_000_000.0  # |value| in any unit; the limits engine applies the real ratings
MAX_SIG_CHARS = 48 * 1024


def _wire_name(name: str) -> str:
    return to_camel(name.rstrip("_"))


def _format_ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _config(*, by_name: bool) -> ConfigDict:
    return ConfigDict(
        alias_generator=_wire_name, strict=True, allow_inf_nan=False, frozen=True,
        extra="forbid", serialize_by_alias=True, validate_by_alias=True, validate_by_name=by_name,
        defer_build=True,
    )


# Inbound: wire names only (one spelling per field, so the signed content is unambiguous).
_IN = _config(by_name=False)
# Outbound: built in Python by field name, validated from JSON by wire name (tests, the store).
_OUT = _config(by_name=True)

Timestamp = Annotated[
    AwareDatetime,
    PlainSerializer(_format_ts, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""RFC 3339 with a UTC offset; sent as UTC with milliseconds (``2026-11-26T08:00:00.000Z``)."""

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"
CommandId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_ID_PATTERN)]
ProfileId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_ID_PATTERN)]
SessionId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_ID_PATTERN)]
IssuerId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_ID_PATTERN)]
DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_ID_PATTERN)]
BootId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_ID_PATTERN)]
IdTag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
Text = Annotated[str, StringConstraints(max_length=256)]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]
Connector = Annotated[int, Field(ge=1, le=MAX_CONNECTORS)]
Seconds = Annotated[int, Field(ge=0, le=MAX_DURATION_S)]
PositiveSeconds = Annotated[int, Field(ge=1, le=MAX_DURATION_S)]
LimitValue = Annotated[float, Field(ge=-MAX_LIMIT, le=MAX_LIMIT)]
Amps = Annotated[float, Field(ge=0, le=1000)]
Count = Annotated[int, Field(ge=0, le=MAX_SEQ)]

LimitUnit = Literal["kW", "W", "A"]
ScheduleUnit = Literal["A", "W"]
Layer = Literal["siteMax", "grid", "default", "session"]
ProfileKind = Literal["absolute", "recurring", "relative"]
Recurrency = Literal["daily", "weekly"]
PilotState = Literal["A", "B", "C", "D", "E", "F"]
"""IEC 61851-1 letters; GB/T 18487.1 Annex A state 1 = A (12 V), 2 = B (9 V), 3 = C (6 V)."""
ContactorState = Literal["open", "closed"]
ContactorFeedback = Literal["open", "closed", "unknown"]
LimitSource = Literal[
    "none", "hardware", "cable", "installer", "siteMax", "grid", "default", "session", "failsafe"
]
RECURRENCY_S: dict[str, int] = {"daily": 86400, "weekly": 7 * 86400}


def _schedule_error(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_schedule", message)


# ---------------------------------------------------------------------------------------- commands
class Limit(BaseModel):
    """A ceiling; a negative value means discharge (``notSupported`` unless the hardware can)."""

    model_config = _OUT
    value: LimitValue
    unit: LimitUnit


class FailsafeLimit(Limit):
    """The fail-safe must still allow charging, so its value is above zero."""

    value: Annotated[float, Field(gt=0, le=MAX_LIMIT)]


class SetLimitBody(BaseModel):
    """A curtailment lease (grid layer, stackLevel = priority) for the device, a group or one
    connector. A higher priority overrides a lower one. At the same priority a connector-specific
    lease and one for all connectors (sent to the device without connector, or to a group) both
    apply and the lower wins: both are limits of some part of the network, and lifting one for
    a connector takes an explicit higher priority. A lease replaces the one with the same target
    and priority (a group lease and a device-wide one have the same target: all connectors).
    W/kW are converted with each connector's own phases and voltage."""

    model_config = _IN
    limit: Limit
    duration_s: Annotated[int, Field(ge=1, le=7 * 86400)]
    start_at: Timestamp | None = None
    priority: Annotated[int, Field(ge=0, le=1000)] = 0
    randomize_start_s: Annotated[int, Field(ge=0, le=86400)] = 0
    dsr: bool = False
    reason: Text | None = None


class SchedulePeriod(BaseModel):
    model_config = _IN
    offset_s: Seconds
    limit: LimitValue
    phases: Annotated[int, Field(ge=1, le=3)] | None = None


class Schedule(BaseModel):
    model_config = _IN
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

    model_config = _IN
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
    model_config = _IN
    profile_id: ProfileId


class ClearProfileByFilter(BaseModel):
    """Every profile and curtailment matching the filter; ``{}`` clears them all (as OCPP)."""

    model_config = _IN
    layer: Layer | None = None
    stack_level: Annotated[int, Field(ge=0, le=1000)] | None = None


class GetCompositeBody(BaseModel):
    model_config = _IN
    horizon_s: Annotated[int, Field(ge=1, le=7 * 86400)]
    unit: ScheduleUnit


class SessionBody(BaseModel):
    model_config = _IN
    id_tag: IdTag | None = None


class FailsafeSettings(BaseModel):
    model_config = _OUT
    after_s: PositiveSeconds
    limit: FailsafeLimit


class SetConfigBody(BaseModel):
    model_config = _IN
    telemetry_period_s: Annotated[int, Field(ge=1, le=3600)] | None = None
    random_delay_max_s: Annotated[int, Field(ge=0, le=1800)] | None = None
    failsafe: FailsafeSettings | None = None
    idle_occupancy_s: Annotated[int, Field(ge=0, le=86400)] | None = None


class ResyncBody(BaseModel):
    model_config = _IN
    from_seq: Seq


class DecommissionBody(BaseModel):
    model_config = _IN
    confirm: DeviceId


class _Envelope(BaseModel):
    model_config = _IN
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


# ----------------------------------------------------------------------------------------- replies
class CompositePeriod(BaseModel):
    model_config = _OUT
    offset_s: Seconds
    limit: Annotated[float, Field(ge=0, le=MAX_LIMIT)]
    phases: Annotated[int, Field(ge=1, le=3)] | None = None
    source: LimitSource


class CompositeSchedule(BaseModel):
    """What the charger will offer: the minimum over all layers and local limits."""

    model_config = _OUT
    connector: Connector
    start_at: Timestamp
    duration_s: PositiveSeconds
    unit: ScheduleUnit
    periods: Annotated[list[CompositePeriod], Field(min_length=1, max_length=4 * MAX_PERIODS)]


class Reply(BaseModel):
    """Sent to ``rsp`` (or the v5 Response Topic) within a second of receipt; not journaled."""

    model_config = _OUT
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


# ------------------------------------------------------------------------------------------ events
class CommandRef(BaseModel):
    """Names a command (``commandId``) or a profile (``profileId``): exactly one of them."""

    model_config = _OUT
    command_id: CommandId | None = None
    profile_id: ProfileId | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.command_id is None) == (self.profile_id is None):
            raise PydanticCustomError("command_ref", "exactly one of commandId, profileId")
        return self


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
    model_config = _OUT
    from_: PilotState
    to: PilotState
    volts: Annotated[float, Field(ge=-15, le=15)]


class ContactorChangedBody(BaseModel):
    model_config = _OUT
    commanded: ContactorState
    feedback: ContactorFeedback


class FaultBody(BaseModel):
    model_config = _OUT
    code: FaultCode
    detail: Text | None = None


class SessionStartedBody(BaseModel):
    model_config = _OUT
    session_id: SessionId
    plug_in_at: Timestamp
    meter_start_wh: Count | None = None
    id_tag: IdTag | None = None


class SessionUpdatedBody(BaseModel):
    model_config = _OUT
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
    model_config = _OUT
    at: Timestamp
    s: Annotated[int, Field(ge=0, le=86400)]


class CurtailmentsMerged(BaseModel):
    """The session's earlier curtailments, merged: a session record keeps its latest 32
    curtailments; the ones before fold into these exact totals (``totalS`` sums each merged
    entry's own duration)."""

    model_config = _OUT
    count: Annotated[int, Field(ge=1)]
    first_from: Timestamp
    last_to: Timestamp
    total_s: Annotated[float, Field(ge=0)]
    min_limit_a: Annotated[float, Field(ge=0, le=MAX_LIMIT)] | None = None


class RandomDelaysMerged(BaseModel):
    """The session's earlier random delays (beyond the latest 32), merged."""

    model_config = _OUT
    count: Annotated[int, Field(ge=1)]
    total_s: Annotated[int, Field(ge=0)]


class SessionEndedBody(BaseModel):
    """The session record; energy comes from the meter's register, never from telemetry."""

    model_config = _OUT
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
    model_config = _OUT
    session_id: SessionId
    charge_end_at: Timestamp
    idle_s: Seconds


class LinkRestoredBody(BaseModel):
    model_config = _OUT
    outage_s: Seconds
    messages_buffered: Count
    telemetry_dropped: Count


class FailsafeEnteredBody(BaseModel):
    model_config = _OUT
    after_s: PositiveSeconds
    limit: FailsafeLimit


class FailsafeExitedBody(BaseModel):
    model_config = _OUT
    duration_s: Seconds


class DeviceConfig(BaseModel):
    model_config = _OUT
    telemetry_period_s: Annotated[int, Field(ge=1, le=3600)]
    random_delay_max_s: Annotated[int, Field(ge=0, le=1800)]
    failsafe: FailsafeSettings | None = None
    idle_occupancy_s: Annotated[int, Field(ge=0, le=86400)]


class ConfigChangedBody(BaseModel):
    model_config = _OUT
    config_version: Count
    config: DeviceConfig
    command_id: CommandId | None = None


class SecurityRejectBody(BaseModel):
    """What was refused and why; never key material, signatures or payload bytes."""

    model_config = _OUT
    reason: Reason
    command_id: CommandId | None = None
    issuer: IssuerId | None = None
    command_type: Annotated[str, StringConstraints(max_length=32)] | None = None
    detail: Text | None = None


class _DeviceMessage(BaseModel):
    model_config = _OUT
    v: Literal[1] = 1
    device_id: DeviceId
    boot_id: BootId


class _Event(_DeviceMessage):
    seq: Seq
    ts: Timestamp
    connector: Connector | None = None


class CommandStartedEvent(_Event):
    type: Literal["commandStarted"] = "commandStarted"
    body: CommandStartedBody


class CommandSupersededEvent(_Event):
    type: Literal["commandSuperseded"] = "commandSuperseded"
    body: CommandSupersededBody


class CommandCompletedEvent(_Event):
    type: Literal["commandCompleted"] = "commandCompleted"
    body: CommandRef


class CommandExpiredEvent(_Event):
    type: Literal["commandExpired"] = "commandExpired"
    body: CommandRef


class CommandClearedEvent(_Event):
    type: Literal["commandCleared"] = "commandCleared"
    body: CommandClearedBody


class CommandOptedOutEvent(_Event):
    type: Literal["commandOptedOut"] = "commandOptedOut"
    body: CommandOptedOutBody


class PilotStateChangedEvent(_Event):
    type: Literal["pilotStateChanged"] = "pilotStateChanged"
    body: PilotStateChangedBody


class ContactorChangedEvent(_Event):
    type: Literal["contactorChanged"] = "contactorChanged"
    body: ContactorChangedBody


class FaultEvent(_Event):
    type: Literal["fault"] = "fault"
    body: FaultBody


class FaultClearedEvent(_Event):
    type: Literal["faultCleared"] = "faultCleared"
    body: FaultBody


class SessionStartedEvent(_Event):
    type: Literal["sessionStarted"] = "sessionStarted"
    body: SessionStartedBody


class SessionUpdatedEvent(_Event):
    type: Literal["sessionUpdated"] = "sessionUpdated"
    body: SessionUpdatedBody


class SessionEndedEvent(_Event):
    type: Literal["sessionEnded"] = "sessionEnded"
    body: SessionEndedBody


class IdleOccupancyEvent(_Event):
    type: Literal["idleOccupancy"] = "idleOccupancy"
    body: IdleOccupancyBody


class LinkRestoredEvent(_Event):
    type: Literal["linkRestored"] = "linkRestored"
    body: LinkRestoredBody


class FailsafeEnteredEvent(_Event):
    type: Literal["failsafeEntered"] = "failsafeEntered"
    body: FailsafeEnteredBody


class FailsafeExitedEvent(_Event):
    type: Literal["failsafeExited"] = "failsafeExited"
    body: FailsafeExitedBody


class ConfigChangedEvent(_Event):
    type: Literal["configChanged"] = "configChanged"
    body: ConfigChangedBody


class SecurityRejectEvent(_Event):
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


# ------------------------------------------------------------------------- telemetry, status, state
class ConnectorTelemetry(BaseModel):
    model_config = _OUT
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


class Telemetry(_DeviceMessage):
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


class ConnectorInfo(BaseModel):
    model_config = _OUT
    connector: Connector
    phases: Literal[1, 3]
    max_current_a: Amps
    # who generates the control pilot: the agent's own pilot board, or a retrofitted wallbox
    # (which then also owns the GB/T 18487.1 reactions and its contactor)
    pilot: Literal["agent", "wallbox"] = "agent"
    wallbox_profile: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class Capabilities(BaseModel):
    model_config = _OUT
    max_periods: Annotated[int, Field(ge=1, le=MAX_PERIODS)]
    max_stack_level: Annotated[int, Field(ge=0, le=1000)]
    units: Annotated[list[LimitUnit], Field(min_length=1, max_length=3)]
    discharge: bool
    signed_commands: bool
    groups: Annotated[list[IssuerId], Field(max_length=16)]
    max_payload_bytes: Annotated[int, Field(ge=1, le=MAX_PAYLOAD_BYTES)]


class OnlineStatus(_DeviceMessage):
    """Birth message (retained ``status``)."""

    online: Literal[True] = True
    agent_version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    api_version: Literal[1] = 1
    connectors: Annotated[list[ConnectorInfo], Field(min_length=1, max_length=MAX_CONNECTORS)]
    capabilities: Capabilities
    at_seq: Seq | None = None


class OfflineStatus(_DeviceMessage):
    """Last Will (``bootId`` of the session it belongs to) or the final decommission status."""

    online: Literal[False] = False
    decommissioned: bool = False


Status = OnlineStatus | OfflineStatus


@cache
def status_adapter() -> TypeAdapter[Status]:
    """Built on first use (schemas and tests; the agent builds OnlineStatus/OfflineStatus)."""
    return TypeAdapter(Status)


class ActiveProfile(CommandRef):
    """A profile (``profileId``) or a ``setLimit`` curtailment (``commandId``) in force."""

    layer: Layer
    stack_level: Annotated[int, Field(ge=0, le=1000)]
    valid_from: Timestamp | None = None
    valid_to: Timestamp | None = None


class ConnectorSnapshot(BaseModel):
    model_config = _OUT
    connector: Connector
    pilot: PilotState
    offered_current_a: Amps
    contactor: ContactorState
    limit_a: Amps
    limit_source: LimitSource
    limit_ref: CommandRef | None = None
    active_profiles: Annotated[list[ActiveProfile], Field(max_length=256)]


class FailsafeState(BaseModel):
    model_config = _OUT
    active: bool
    since: Timestamp | None = None


class State(_DeviceMessage):
    """Retained snapshot published on every change; not journaled, so it carries ``atSeq``."""

    at_seq: Seq
    ts: Timestamp
    config_version: Count
    failsafe: FailsafeState
    connectors: Annotated[list[ConnectorSnapshot], Field(min_length=1, max_length=MAX_CONNECTORS)]


def encode(message: BaseModel) -> bytes:
    """Wire bytes of a device-originated message: wire names, UTC timestamps, no null fields."""
    return message.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8")

