"""What every message of the API v1 shares: limits of the contract, the wire naming, field types.

Python names are snake_case; the wire names are the spec's camelCase (an alias generator; a
trailing underscore is dropped, so ``from_`` is ``from``). Inbound models accept only wire names;
outbound ones are built by field name and validated from JSON by wire name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from agent.api.bounds import MAX_CONNECTORS as MAX_CONNECTORS  # config uses it too

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
INBOUND = _config(by_name=False)
# Outbound: built in Python by field name, validated from JSON by wire name (tests, the store).
OUTBOUND = _config(by_name=True)

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


class Limit(BaseModel):
    """A ceiling; a negative value means discharge (``notSupported`` unless the hardware can)."""

    model_config = OUTBOUND
    value: LimitValue
    unit: LimitUnit


class FailsafeLimit(Limit):
    """The fail-safe must still allow charging, so its value is above zero."""

    value: Annotated[float, Field(gt=0, le=MAX_LIMIT)]


class FailsafeSettings(BaseModel):
    model_config = OUTBOUND
    after_s: PositiveSeconds
    limit: FailsafeLimit


class CommandRef(BaseModel):
    """Names a command (``commandId``) or a profile (``profileId``): exactly one of them."""

    model_config = OUTBOUND
    command_id: CommandId | None = None
    profile_id: ProfileId | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.command_id is None) == (self.profile_id is None):
            raise PydanticCustomError("command_ref", "exactly one of commandId, profileId")
        return self


class DeviceMessage(BaseModel):
    model_config = OUTBOUND
    v: Literal[1] = 1
    device_id: DeviceId
    boot_id: BootId


def encode(message: BaseModel) -> bytes:
    """Wire bytes of a device-originated message: wire names, UTC timestamps, no null fields."""
    return message.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8")
