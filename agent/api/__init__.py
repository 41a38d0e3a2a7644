"""The aggregator-facing API (MQTT API v1): models, envelope checks, signatures, generated docs.

Pure: nothing here does I/O except ``agent.api.schemas`` when run as a program.
"""

from agent.api.envelope import (
    CommandStore,
    EnvelopeChecker,
    MemoryCommandStore,
    Verdict,
    content_hash,
    decode_json,
    parse_command,
    parse_command_with_source,
)
from agent.api.jws import canonical_json, sign_envelope, verify_envelope
from agent.api.models import API_VERSION, MAX_PAYLOAD_BYTES, Command, Event, Reply, encode
from agent.api.reasons import OptOutReason, Reason, ReplyStatus, StopReason

__all__ = [
    "API_VERSION",
    "MAX_PAYLOAD_BYTES",
    "Command",
    "CommandStore",
    "EnvelopeChecker",
    "Event",
    "MemoryCommandStore",
    "OptOutReason",
    "Reason",
    "Reply",
    "ReplyStatus",
    "StopReason",
    "Verdict",
    "canonical_json",
    "content_hash",
    "decode_json",
    "encode",
    "parse_command",
    "parse_command_with_source",
    "sign_envelope",
    "verify_envelope",
]
