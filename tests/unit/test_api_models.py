"""Parsing of commands (every type, every reject path) and the device-originated models."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from agent.api import models as m
from agent.api.envelope import decode_json, parse_command, parse_command_with_source
from agent.api.reasons import OptOutReason, Reason, ReplyStatus, StopReason
from agent.api.schemas import COMMAND_EXAMPLES, command_examples
from agent.errors import ProtocolError
from agent.faults import FaultCode

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def _raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _example(kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(e for e in command_examples() if e["type"] == kind))


def _reason(raw: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        parse_command(raw)
    return info.value.reason


@pytest.mark.parametrize("kind", list(COMMAND_EXAMPLES))
def test_every_command_type_parses(kind: str) -> None:
    example = _example(kind)
    command, source = parse_command_with_source(_raw(example))
    assert command.type == kind
    assert command.id == example["id"] and command.seq == example["seq"]
    assert source == example


def test_set_limit_defaults_and_optional_envelope_fields() -> None:
    obj = {"v": 1, "id": "c1", "type": "setLimit", "issuer": "agg-1",
           "issuedAt": "2026-11-26T16:00:00+08:00", "seq": 0,
           "body": {"limit": {"value": 0, "unit": "A"}, "durationS": 60}}
    cmd = parse_command(_raw(obj))
    assert isinstance(cmd, m.SetLimitCommand)
    assert cmd.connector is None and cmd.expires_at is None and cmd.sig is None
    assert cmd.issued_at == T0  # +08:00 understood
    assert (cmd.body.priority, cmd.body.randomize_start_s, cmd.body.dsr) == (0, 0, False)


def test_clear_profile_by_filter_and_clear_all() -> None:
    obj = _example("clearProfile")
    obj["body"] = {"layer": "grid", "stackLevel": 2}
    body = parse_command(_raw(obj)).body
    assert isinstance(body, m.ClearProfileByFilter) and body.stack_level == 2
    obj["body"] = {}
    assert isinstance(parse_command(_raw(obj)).body, m.ClearProfileByFilter)


def _with(kind: str, path: str, value: Any) -> bytes:
    """The example of ``kind`` with the field at dotted ``path`` set (deleted if value is ...)."""
    obj = _example(kind)
    *parents, last = path.split(".")
    node: Any = obj
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return _raw(obj)


SETLIMIT = json.dumps(_example("setLimit"))
MALFORMED: list[tuple[str, bytes]] = [
    ("not UTF-8", b'{"v":1,"id":"\xff\xfe"}'),
    ("empty", b""),
    ("truncated JSON", SETLIMIT[:-3].encode()),
    ("UTF-8 BOM", "\ufeff".encode() + SETLIMIT.encode()),
    ("too large", SETLIMIT.encode() + b" " * m.MAX_PAYLOAD_BYTES),
    ("nested beyond the recursion limit", b"[" * 30000 + b"]" * 30000),
    ("nested beyond MAX_JSON_DEPTH",
     _with("setLimit", "body.reason", json.loads("[" * 20 + "]" * 20))),
    ("top-level array", b"[1,2]"),
    ("top-level string", b'"setLimit"'),
    ("NaN", SETLIMIT.replace("3.5", "NaN").encode()),
    ("Infinity", SETLIMIT.replace("3.5", "Infinity").encode()),
    ("-Infinity", SETLIMIT.replace("3.5", "-Infinity").encode()),
    ("1e400 overflows to inf", SETLIMIT.replace("3.5", "1e400").encode()),
    ("duplicate key",
     SETLIMIT.replace('"durationS": 900', '"durationS": 900, "durationS": 9').encode()),
    ("lone surrogate", _with("setLimit", "body.reason", "x").replace(b'"x"', b'"\\ud800"')),
    ("unknown envelope field", _with("setLimit", "priority", 1)),
    ("unknown body field", _with("setLimit", "body.randomizeDurationS", 60)),
    ("unknown nested field", _with("setLimit", "body.limit.phases", 3)),
    ("snake_case name",
     _with("setLimit", "body.duration_s", 900).replace(b'"durationS": 900, ', b"")),
    ("unknown command type", _with("setLimit", "type", "reboot")),
    ("missing type", _with("setLimit", "type", ...)),
    ("API version 2", _with("setLimit", "v", 2)),
    ("missing required durationS", _with("setLimit", "body.durationS", ...)),
    ("seq as string", _with("setLimit", "seq", "1001")),
    ("durationS as float", _with("setLimit", "body.durationS", 900.0)),
    ("dsr as string", _with("setLimit", "body.dsr", "true")),
    ("limit value as string", _with("setLimit", "body.limit.value", "3.5")),
    ("issuedAt as epoch", _with("setLimit", "issuedAt", 1795680000)),
    ("naive issuedAt", _with("setLimit", "issuedAt", "2026-11-26T08:00:00")),
    ("expiresAt before issuedAt", _with("setLimit", "expiresAt", "2026-11-26T07:00:00Z")),
    ("seq negative", _with("setLimit", "seq", -1)),
    ("seq above 2**53-1", _with("setLimit", "seq", 2**53)),
    ("connector 0", _with("setLimit", "connector", 0)),
    ("durationS 0", _with("setLimit", "body.durationS", 0)),
    ("limit beyond bounds", _with("setLimit", "body.limit.value", 1e7)),
    ("reason too long", _with("setLimit", "body.reason", "x" * 257)),
    ("id with a space", _with("setLimit", "id", "cmd 1")),
    ("id too long", _with("setLimit", "id", "a" * 129)),
    ("randomDelayMaxS above 1800", _with("setConfig", "body.randomDelayMaxS", 1801)),
    ("failsafe limit 0", _with("setConfig", "body.failsafe.limit.value", 0)),
    ("clearProfile id and filter", _with("clearProfile", "body.layer", "grid")),
    ("unknown layer", _with("setProfile", "body.layer", "household")),
    ("phases 4", _with("setProfile", "body.schedule.periods.1.phases", 4)),
    ("resync fromSeq as null", _with("resync", "body.fromSeq", None)),
    ("idTag with a space", _with("startSession", "body.idTag", "04 A2")),
]


@pytest.mark.parametrize(("case", "raw"), MALFORMED, ids=[c for c, _ in MALFORMED])
def test_malformed_payloads_are_invalid_schema(case: str, raw: bytes) -> None:
    assert _reason(raw) == "INVALID_SCHEMA", case


def test_schema_error_detail_names_paths_not_values() -> None:
    secret = "S3CRET-" * 20
    with pytest.raises(ProtocolError) as info:
        parse_command(_with("startSession", "body.idTag", secret))
    assert "body.idTag" in info.value.message
    assert "S3CRET" not in str(info.value)
    assert info.value.context["command_id"] == "cmd-0005"
    assert info.value.context["issuer"] == "agg-1"


def test_size_is_checked_before_decoding() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_json(b"\xff" * (m.MAX_PAYLOAD_BYTES + 1))


def _profile(**body: Any) -> bytes:
    obj = _example("setProfile")
    obj["body"].update(body)
    return _raw(obj)


def _periods(*offsets: int) -> list[dict[str, Any]]:
    return [{"offsetS": o, "limit": 16} for o in offsets]


SCHEDULE_CASES: list[tuple[str, bytes, str]] = [
    ("first period not at 0", _with("setProfile", "body.schedule.periods.0.offsetS", 60),
     "INVALID_SCHEDULE"),
    ("offsets not increasing", _with("setProfile", "body.schedule.periods", _periods(0, 600, 600)),
     "INVALID_SCHEDULE"),
    ("period beyond durationS", _with("setProfile", "body.schedule.durationS", 3600),
     "INVALID_SCHEDULE"),
    ("relative with startAt", _profile(kind="relative", recurrency=None), "INVALID_SCHEDULE"),
    ("absolute with recurrency", _profile(kind="absolute"), "INVALID_SCHEDULE"),
    ("recurring without recurrency", _with("setProfile", "body.recurrency", ...),
     "INVALID_SCHEDULE"),
    ("absolute without startAt",
     _profile(kind="absolute", recurrency=None, schedule={"unit": "A", "periods": _periods(0)}),
     "INVALID_SCHEDULE"),
    ("validFrom after validTo", _profile(validFrom="2026-12-01T00:00:00Z",
                                         validTo="2026-11-01T00:00:00Z"), "INVALID_SCHEDULE"),
    ("daily schedule longer than a day", _with("setProfile", "body.schedule.durationS", 90000),
     "INVALID_SCHEDULE"),
    ("too many periods", _with("setProfile", "body.schedule.periods",
                               _periods(*range(0, 60 * (m.MAX_PERIODS + 1), 60))),
     "TOO_MANY_PERIODS"),
    ("no periods", _with("setProfile", "body.schedule.periods", []), "INVALID_SCHEMA"),
    ("setLimit unit kWh", _with("setLimit", "body.limit.unit", "kWh"), "UNIT_UNSUPPORTED"),
    ("schedule unit kW", _with("setProfile", "body.schedule.unit", "kW"), "UNIT_UNSUPPORTED"),
    ("unit as a number", _with("setLimit", "body.limit.unit", 1), "INVALID_SCHEMA"),
]


@pytest.mark.parametrize(("case", "raw", "reason"), SCHEDULE_CASES,
                         ids=[c for c, _, _ in SCHEDULE_CASES])
def test_specific_reasons(case: str, raw: bytes, reason: str) -> None:
    assert _reason(raw) == reason, case


def test_relative_profile_without_start_is_valid() -> None:
    obj = _example("setProfile")
    obj["body"].update(kind="relative", layer="session")
    del obj["body"]["recurrency"], obj["body"]["schedule"]["startAt"]
    cmd = parse_command(_raw(obj))
    assert isinstance(cmd, m.SetProfileCommand) and cmd.body.kind == "relative"


# ------------------------------------------------------------------------ device-originated models
DEV: dict[str, Any] = {"device_id": "CN-BJ-0001", "boot_id": "b-7"}
REF: dict[str, Any] = {"command_id": "cmd-0001"}
LIMIT = m.Limit(value=3.5, unit="kW")
BODIES: dict[str, Any] = {
    "commandStarted": m.CommandStartedBody(**REF, applied_limit=LIMIT, applied_limit_a=15.2,
                                           random_delay_s=0),
    "commandSuperseded": m.CommandSupersededBody(**REF, superseded_by=m.CommandRef(
        profile_id="p-2")),
    "commandCompleted": m.CommandRef(**REF),
    "commandExpired": m.CommandRef(profile_id="p-1"),
    "commandCleared": m.CommandClearedBody(**REF, cleared_by="cmd-0009"),
    "commandOptedOut": m.CommandOptedOutBody(**REF, reason=OptOutReason.USER_OVERRIDE),
    "pilotStateChanged": m.PilotStateChangedBody(from_="B", to="C", volts=6.1),
    "contactorChanged": m.ContactorChangedBody(commanded="closed", feedback="closed"),
    "fault": m.FaultBody(code=FaultCode.RCD_TRIP, detail="6 mA DC"),
    "faultCleared": m.FaultBody(code=FaultCode.RCD_TRIP),
    "sessionStarted": m.SessionStartedBody(session_id="s-1", plug_in_at=T0, meter_start_wh=1000),
    "sessionUpdated": m.SessionUpdatedBody(session_id="s-1", pilot="C", offered_current_a=16,
                                           limit_a=16, limit_source="grid", random_delay_s=312),
    "sessionEnded": m.SessionEndedBody(
        session_id="s-1", plug_in_at=T0, charge_start_at=T0, charge_end_at=T0, plug_out_at=T0,
        meter_start_wh=1000, meter_stop_wh=8400, energy_wh=7400, max_power_w=7200.5,
        stop_reason=StopReason.EV_DISCONNECTED,
        curtailments=[m.Curtailment(**REF, from_=T0, to=T0, limit=LIMIT)],
        random_delays=[m.RandomDelay(at=T0, s=312)], idle_occupancy_s=1800, offline=False),
    "idleOccupancy": m.IdleOccupancyBody(session_id="s-1", charge_end_at=T0, idle_s=1800),
    "linkRestored": m.LinkRestoredBody(outage_s=3600, messages_buffered=420, telemetry_dropped=0),
    "failsafeEntered": m.FailsafeEnteredBody(after_s=900, limit=m.FailsafeLimit(value=8, unit="A")),
    "failsafeExited": m.FailsafeExitedBody(duration_s=1200),
    "configChanged": m.ConfigChangedBody(config_version=4, config=m.DeviceConfig(
        telemetry_period_s=10, random_delay_max_s=600, idle_occupancy_s=1800)),
    "securityReject": m.SecurityRejectBody(reason=Reason.SIGNATURE_INVALID, issuer="agg-1"),
}


def test_every_event_type_has_a_body_example() -> None:
    assert set(BODIES) == {cls.model_fields["type"].default for cls in _event_classes()}


def _event_classes() -> list[type[BaseModel]]:
    return [c for c in vars(m).values()
            if isinstance(c, type) and issubclass(c, m.DeviceEvent) and c is not m.DeviceEvent]


@pytest.mark.parametrize("kind", list(BODIES))
def test_events_round_trip_on_the_wire(kind: str) -> None:
    cls = next(c for c in _event_classes() if c.model_fields["type"].default == kind)
    event = cls(**DEV, seq=88121, ts=T0, connector=1, body=BODIES[kind])
    wire = m.encode(event)
    obj = json.loads(wire)
    assert obj["type"] == kind and obj["deviceId"] == "CN-BJ-0001" and obj["ts"] == (
        "2026-11-26T08:00:00.000Z")
    assert m.event_adapter().validate_json(wire) == event


def test_wire_names_are_camel_case_and_from_has_no_underscore() -> None:
    obj = json.loads(m.encode(BODIES["sessionEnded"]))
    assert obj["curtailments"][0]["from"] == "2026-11-26T08:00:00.000Z"
    assert {"plugInAt", "meterStopWh", "stopReason", "idleOccupancyS"} <= set(obj)
    assert "idTag" not in obj  # None fields are left out


def test_session_energy_must_come_from_the_register() -> None:
    with pytest.raises(ValidationError):
        m.SessionEndedBody(**{**BODIES["sessionEnded"].model_dump(), "energy_wh": 7000})


@pytest.mark.parametrize("ref", [{}, {"command_id": "c", "profile_id": "p"}])
def test_command_ref_needs_exactly_one_id(ref: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        m.CommandRef(**ref)


def test_telemetry_status_state_reply_round_trip() -> None:
    tel = m.Telemetry(**DEV, seq=5, ts=T0, connectors=[m.ConnectorTelemetry(
        connector=1, pilot="C", power_w=7040.0, current_a=[32.0], voltage_v=[220.0],
        energy_import_wh=123456, offered_current_a=32, limit_a=32, limit_source="hardware",
        session_id="s-1", contactor="closed", temp_c=41.5)])
    assert m.Telemetry.model_validate_json(m.encode(tel)) == tel
    online = m.OnlineStatus(**DEV, agent_version="0.1.0", connectors=[m.ConnectorInfo(
        connector=1, phases=1, max_current_a=32)], capabilities=m.Capabilities(
        max_periods=48, max_stack_level=10, units=["A", "W", "kW"], discharge=False,
        signed_commands=True, groups=["feeder-12"], max_payload_bytes=m.MAX_PAYLOAD_BYTES))
    will = m.OfflineStatus(**DEV)
    assert json.loads(m.encode(will)) == {"v": 1, "deviceId": "CN-BJ-0001", "bootId": "b-7",
                                          "online": False, "decommissioned": False}
    for status in (online, will):
        assert m.status_adapter().validate_json(m.encode(status)) == status
    state = m.State(**DEV, at_seq=5, ts=T0, config_version=3, failsafe=m.FailsafeState(
        active=False), connectors=[m.ConnectorSnapshot(
        connector=1, pilot="B", offered_current_a=0, contactor="open", limit_a=10,
        limit_source="default", limit_ref=m.CommandRef(profile_id="valley"),
        active_profiles=[m.ActiveProfile(profile_id="valley", layer="default", stack_level=1)])])
    assert m.State.model_validate_json(m.encode(state)) == state
    reply = m.Reply(command_id="c1", device_id="CN-BJ-0001", status=ReplyStatus.ACCEPTED,
                    reason=Reason.OK, at_seq=5, composite=[m.CompositeSchedule(
                        connector=1, start_at=T0, duration_s=86400, unit="A", periods=[
                            m.CompositePeriod(offset_s=0, limit=16, source="grid")])])
    assert m.Reply.model_validate_json(m.encode(reply)) == reply
