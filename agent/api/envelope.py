"""Parsing and checking of command envelopes; pure (the command store is injected).

``parse_command`` turns untrusted bytes into a typed command or a ProtocolError with a stable
reason. ``EnvelopeChecker.check`` then decides, in the contract's order: duplicate id (before
anything else, so a QoS 1 redelivery is never a replay), signature, expiry, clock skew, replay, then
the capability checks. It reads the store but never writes it: the caller applies the command,
builds the final reply and calls ``commit`` whenever ``verdict.record`` is set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from agent.api.jws import signing_payload, verify_envelope
from agent.api.models import (
    MAX_JSON_DEPTH,
    MAX_PAYLOAD_BYTES,
    Command,
    DecommissionCommand,
    Reply,
    SecurityRejectBody,
    SetLimitCommand,
    SetProfileCommand,
    command_adapter,
)
from agent.api.reasons import Reason, ReplyStatus
from agent.errors import ProtocolError

if TYPE_CHECKING:  # only issuer keys need cryptography (agent.orderly.keys imports it then)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MAX_DETAIL_CHARS = 1024
_MAX_ERRORS_SHOWN = 8


# ------------------------------------------------------------------------------------------ parsing
def _schema_error(message: str, **context: object) -> NoReturn:
    raise ProtocolError(message, reason=Reason.INVALID_SCHEMA.value, **context)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # two parsers could disagree on which value counts (and is signed)
        raise ValueError("duplicate object key")
    return obj


def _check_tree(root: Any) -> None:
    """Depth bound and well-formed strings (a lone surrogate escape cannot be re-encoded)."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            _schema_error(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, str):
            _encodable(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                _encodable(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProtocolError("lone surrogate in a JSON string", reason="INVALID_SCHEMA") from exc


def decode_json(raw: bytes) -> Any:
    """Bounded, strict JSON: size first; UTF-8; no NaN/Infinity, duplicate keys or deep nests."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        _schema_error(f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("payload is not UTF-8", reason="INVALID_SCHEMA") from exc
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except RecursionError as exc:
        raise ProtocolError("JSON nested too deeply", reason="INVALID_SCHEMA") from exc
    except ValueError as exc:  # JSONDecodeError, our hooks, int longer than 4300 digits
        raise ProtocolError(f"payload is not valid JSON: {exc}", reason="INVALID_SCHEMA") from exc
    _check_tree(value)
    return value


def _error_reason(error: ErrorDetails) -> Reason:
    loc = error["loc"]
    if error["type"] == "invalid_schedule":
        return Reason.INVALID_SCHEDULE
    if error["type"] == "too_long" and loc and loc[-1] == "periods":
        return Reason.TOO_MANY_PERIODS
    unit = error["type"] == "literal_error" and bool(loc) and loc[-1] == "unit"
    if unit and isinstance(error.get("input"), str):
        return Reason.UNIT_UNSUPPORTED
    return Reason.INVALID_SCHEMA


def _describe(errors: list[ErrorDetails], command_type: object) -> str:
    """JSON paths and messages, never the offending values (they may carry secrets)."""
    parts = []
    for error in errors[:_MAX_ERRORS_SHOWN]:
        loc = list(error["loc"])
        if loc and loc[0] == command_type:  # the discriminator's branch, not a JSON path
            loc = loc[1:]
        path = ".".join(str(p)[:64] for p in loc) or "(root)"
        parts.append(f"{path}: {error['msg']}")
    if len(errors) > _MAX_ERRORS_SHOWN:
        parts.append(f"... {len(errors) - _MAX_ERRORS_SHOWN} more")
    return "; ".join(parts)[:MAX_DETAIL_CHARS]


def _peek(obj: Any, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isascii() and value.isprintable():
        return value
    return None


def parse_command_with_source(raw: bytes) -> tuple[Command, dict[str, Any]]:
    """The typed command and the decoded JSON object (which the content hash and signature cover).

    Raises ProtocolError whose ``reason`` is INVALID_SCHEMA, INVALID_SCHEDULE, UNIT_UNSUPPORTED or
    TOO_MANY_PERIODS; its context carries ``command_id``/``issuer``/``command_type`` when they could
    be read, so the reply can still name the command.
    """
    obj = decode_json(raw)
    ids = {"command_id": _peek(obj, "id"), "issuer": _peek(obj, "issuer"),
           "command_type": _peek(obj, "type")}
    if not isinstance(obj, dict):
        _schema_error("a command must be a JSON object", **ids)
    try:
        command = command_adapter().validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        reasons = {_error_reason(e) for e in errors}
        reason = reasons.pop() if len(reasons) == 1 else Reason.INVALID_SCHEMA
        detail = _describe(errors, obj.get("type"))
        raise ProtocolError(detail, reason=reason.value, **ids) from exc
    return command, obj


def parse_command(raw: bytes) -> Command:
    """The typed command in ``raw``, or ProtocolError with a reason code (see above)."""
    return parse_command_with_source(raw)[0]


def content_hash(envelope: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of the envelope without ``sig``."""
    return hashlib.sha256(signing_payload(envelope)).hexdigest()


# ----------------------------------------------------------------------------------------- checking
class CommandStore(Protocol):
    """Persisted replies (for duplicates) and per-issuer ``seq`` high-water marks.

    ``agent/command_store.py`` implements it on SQLite; a Reply persists as
    ``reply.model_dump_json()`` and comes back with ``Reply.model_validate_json``. Rows may be
    dropped once ``expires_at`` (plus a margin) has passed; a row without ``expires_at`` is kept
    for the retention period.
    ``record`` with ``seq`` also raises the issuer's mark to at least ``seq``, atomically, so a
    crash can never leave a raised mark without the reply (which would turn a redelivery into
    REPLAY instead of ``duplicate``). Marks never go down.
    """

    def get_reply(self, issuer: str, command_id: str) -> tuple[str, Reply] | None: ...

    def record(
        self, issuer: str, command_id: str, content_hash: str, reply: Reply,
        *, expires_at: datetime | None, seq: int | None = None,
    ) -> None: ...

    def high_water(self, issuer: str) -> int | None: ...

    def set_high_water(self, issuer: str, seq: int) -> None: ...


class MemoryCommandStore:
    """A CommandStore in a dict, for tests and tools."""

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], tuple[str, Reply]] = {}
        self.marks: dict[str, int] = {}

    def get_reply(self, issuer: str, command_id: str) -> tuple[str, Reply] | None:
        return self.replies.get((issuer, command_id))

    def record(
        self, issuer: str, command_id: str, content_hash: str, reply: Reply,
        *, expires_at: datetime | None, seq: int | None = None,
    ) -> None:
        self.replies[(issuer, command_id)] = (content_hash, reply)
        if seq is not None:
            self.set_high_water(issuer, seq)

    def high_water(self, issuer: str) -> int | None:
        return self.marks.get(issuer)

    def set_high_water(self, issuer: str, seq: int) -> None:
        self.marks[issuer] = max(seq, self.marks.get(issuer, seq))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of the envelope checks. ``proceed``: apply the command, then ``commit``."""

    status: ReplyStatus
    reason: Reason
    command_id: str
    device_id: str
    source: Mapping[str, Any]  # the decoded envelope, which the content hash covers
    detail: str | None = None
    cached_reply: Reply | None = None
    security_reject: bool = False
    record: bool = False

    @property
    def content_hash(self) -> str:
        """sha256 of the canonical envelope: computed when needed (a known id, the record),
        not before the command is applied."""
        return content_hash(self.source)

    @property
    def proceed(self) -> bool:
        return self.status is ReplyStatus.ACCEPTED

    def reply(self, *, at_seq: int, applied_at: datetime | None = None) -> Reply:
        """The reply for a final verdict (a duplicate repeats the cached reply)."""
        if self.cached_reply is not None:
            return self.cached_reply
        return Reply(
            command_id=self.command_id, device_id=self.device_id, status=self.status,
            reason=self.reason, detail=self.detail, applied_at=applied_at, at_seq=at_seq,
        )

    def security_body(self, command: Command) -> SecurityRejectBody:
        """Body of the ``securityReject`` event for this verdict (no signature, no payload)."""
        return SecurityRejectBody(
            reason=self.reason, command_id=command.id, issuer=command.issuer,
            command_type=command.type, detail=self.detail,
        )


class EnvelopeChecker:
    """The contract's envelope rules. ``issuer_keys=None``: no signatures; ``{}``: refuse all."""

    def __init__(
        self,
        store: CommandStore,
        *,
        max_skew_s: float,
        issuer_keys: Mapping[str, Ed25519PublicKey] | None,
        device_id: str,
        discharge_supported: bool = False,
    ) -> None:
        self._store = store
        self._max_skew = timedelta(seconds=max_skew_s)
        self._keys = None if issuer_keys is None else dict(issuer_keys)
        self._device_id = device_id
        self._discharge = discharge_supported
        # admitted, reply not yet recorded (``reserve``/``release``): id -> admissions, and
        # each issuer's highest admitted seq (the store's mark catches up when it is recorded)
        self._in_flight: dict[tuple[str, str], int] = {}
        self._reserved_marks: dict[str, int] = {}

    def check(self, cmd: Command, raw_json_obj: Mapping[str, Any], now: datetime) -> Verdict:
        def verdict(status: ReplyStatus, reason: Reason, detail: str | None = None,
                    **extra: Any) -> Verdict:
            return Verdict(status, reason, cmd.id, self._device_id, raw_json_obj, detail,
                           **extra)

        known = self._store.get_reply(cmd.issuer, cmd.id)
        if known is not None:
            known_hash, reply = known
            if known_hash == content_hash(raw_json_obj):
                original = reply.original_status or reply.status
                repeat = reply.model_copy(
                    update={"status": ReplyStatus.DUPLICATE, "original_status": original})
                return verdict(ReplyStatus.DUPLICATE, reply.reason, reply.detail,
                               cached_reply=repeat)
            return verdict(ReplyStatus.REJECTED, Reason.ID_CONFLICT,
                           "this id was used before with other content")
        if self._keys is not None:
            key = self._keys.get(cmd.issuer)
            try:
                if key is None:
                    raise ProtocolError("unknown issuer", reason=Reason.SIGNATURE_INVALID.value)
                verify_envelope(raw_json_obj, key)
            except ProtocolError as exc:
                return verdict(ReplyStatus.REJECTED, Reason.SIGNATURE_INVALID, exc.message,
                               security_reject=True)
        if cmd.expires_at is not None and now > cmd.expires_at:
            return verdict(ReplyStatus.REJECTED, Reason.EXPIRED, "received after expiresAt")
        if cmd.issued_at > now + self._max_skew:
            return verdict(ReplyStatus.REJECTED, Reason.CLOCK_SKEW,
                           f"issuedAt is more than {self._max_skew.total_seconds():g} s ahead")
        mark = self._store.high_water(cmd.issuer)
        reserved = self._reserved_marks.get(cmd.issuer)
        if reserved is not None and (mark is None or reserved > mark):
            mark = reserved
        if mark is not None and cmd.seq <= mark:
            return verdict(ReplyStatus.REJECTED, Reason.REPLAY,
                           f"seq {cmd.seq} is not above {mark}", security_reject=True)
        # From here on the command is authentic and fresh: its reply is recorded.
        if not self._discharge and _discharges(cmd):
            return verdict(ReplyStatus.NOT_SUPPORTED, Reason.LOCAL_CONSTRAINT,
                           "negative limits (discharge) are not supported by this charger",
                           record=True)
        if isinstance(cmd, DecommissionCommand) and cmd.body.confirm != self._device_id:
            return verdict(ReplyStatus.REJECTED, Reason.LOCAL_CONSTRAINT,
                           "confirm must equal this charger's deviceId", record=True)
        return verdict(ReplyStatus.ACCEPTED, Reason.OK, record=True)

    def in_flight(self, cmd: Command) -> bool:
        """Whether a command with this issuer and id was admitted and its reply is not yet
        recorded: ``check`` cannot tell a redelivery of it yet (wait, then check)."""
        return (cmd.issuer, cmd.id) in self._in_flight

    def reserve(self, cmd: Command, verdict: Verdict) -> None:
        """A verdict to be recorded: from now on its ``seq`` counts for the issuer's mark, and
        its id is in flight until ``release`` (after ``commit``)."""
        if not verdict.record:
            return
        key = (cmd.issuer, cmd.id)
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        self._reserved_marks[cmd.issuer] = max(cmd.seq,
                                               self._reserved_marks.get(cmd.issuer, cmd.seq))

    def release(self, cmd: Command, verdict: Verdict) -> None:
        """The reply of a reserved verdict is recorded (or failed): its id is no longer in
        flight."""
        if not verdict.record:
            return
        key = (cmd.issuer, cmd.id)
        left = self._in_flight.get(key, 0) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)

    def commit(self, cmd: Command, verdict: Verdict, reply: Reply) -> None:
        """Remember the final reply (for duplicates) and raise the issuer's high-water mark."""
        if not verdict.record:
            raise ValueError("this verdict is not to be recorded")
        self._store.record(cmd.issuer, cmd.id, verdict.content_hash, reply,
                           expires_at=cmd.expires_at, seq=cmd.seq)


def _discharges(cmd: Command) -> bool:
    if isinstance(cmd, SetLimitCommand):
        return cmd.body.limit.value < 0
    if isinstance(cmd, SetProfileCommand):
        return any(p.limit < 0 for p in cmd.body.schedule.periods)
    return False
